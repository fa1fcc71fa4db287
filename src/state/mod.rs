//! Layer 3, the state on disk: the dkms tree's layout (`tree`), registered module versions, the
//! tree lock, crash-safe writes (`atomic`), journals of unfinished work, whether an installed
//! module's files are there (`presence`), source trust and the apt no-op fingerprint.
//! May use `base`, `conf`, `system`.

pub mod atomic;
pub mod broken;
pub mod fingerprint;
pub mod journal;
pub mod lock;
pub mod presence;
pub mod registered;
pub mod sources;
pub mod tree;
pub mod trust;

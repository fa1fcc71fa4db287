//! Layer 3, the state on disk: the dkms tree's layout (`tree`), registered module versions, the
//! tree lock, crash-safe writes (`atomic`), journals of unfinished work, a module's files
//! (`module_files`) and whether an installation has them (`presence`), dpkg's database (`dpkg`),
//! source trust and the apt no-op fingerprint.
//! May use `base`, `conf`, `system`.

pub mod atomic;
pub mod broken;
pub mod dpkg;
pub mod failures;
pub mod fingerprint;
pub mod journal;
pub mod lock;
pub mod module_files;
pub mod presence;
pub mod purge;
pub mod registered;
pub mod sources;
pub mod tree;
pub mod trust;

//! Layer 5, the effects on the machine: building (make, scripts, build user), compressing,
//! signing, installing into `/lib/modules` (and the kernel's originals set aside), depmod and
//! initramfs. May use every layer below (`base`, `conf`, `system`, `state`, `planning`).

pub mod build;
pub mod build_procs;
pub mod build_user;
pub mod compress;
pub mod depmod;
pub mod initramfs;
pub mod install;
pub mod mok;
pub mod original;
pub mod post_transaction;
pub mod script;
pub mod signing;

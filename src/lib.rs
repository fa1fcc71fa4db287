//! rdkms: a DKMS-compatible manager for out-of-tree kernel modules. The binary is a thin shell
//! around this library so integration tests and every command share one implementation.
//!
//! The folders are layers, lowest first; a layer uses only the layers before it
//! (`tests/layers.rs` checks it): `base`, `conf` (the dkms.conf engine), `system`, `state`,
//! `planning`, `effects`, `ops`, `package`, `cmd` (the command line and the commands).

pub mod base;
pub mod cmd;
pub mod conf;
pub mod effects;
pub mod ops;
pub mod package;
pub mod planning;
pub mod state;
pub mod system;

pub use base::error::{Error, Result};
pub use cmd::run;

//! Layer 0, the base: the error type, DKMS's version order, dates, the persona rdkms runs as,
//! parallel scans and external tools. Knows nothing of rdkms's trees; uses only std and crates.

pub mod date;
pub mod error;
pub mod par;
pub mod persona;
pub mod tool;
pub mod version;

//! Layer 7, packaging: Debian binary packages (`deb`), tar archives, copyright files, and the
//! packaging commands' engines (`bmdeb`, `mkdeb`, `tarball`). May use every layer below.

pub mod archive;
pub mod bmdeb;
pub mod copyright;
pub mod deb;
pub mod mkdeb;
pub mod tarball;

//! Layer 6, operations on one module version under the tree lock: `add`, and build, install,
//! uninstall, unbuild, remove (`lifecycle`). May use every layer below.

pub mod add;
pub mod lifecycle;

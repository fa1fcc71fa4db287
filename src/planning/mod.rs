//! Layer 4, planning: which kernels exist (`inventory`), the pure planner from a snapshot to
//! steps (`plan`, no I/O) and the order concurrent builds start in (`build_order`).
//! May use `base`, `conf`, `system`, `state`.

pub mod build_order;
pub mod inventory;
pub mod plan;

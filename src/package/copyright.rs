//! The copyright file of generated packages. rdkms does not know who wrote a module, so it
//! quotes what the module's own sources say: their copyright lines and declared licenses.

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::path::Path;

/// Lines are looked for at the top of each file, where notices live.
const HEAD_BYTES: u64 = 8192;
/// Files bigger than this are not sources (firmware blobs, objects).
const MAX_FILE: u64 = 4 << 20;
/// At most this many notices are quoted.
const MAX_NOTICES: usize = 30;

/// What a source tree says about its authors and licenses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Notices {
    /// Distinct `Copyright ... YEAR ...` lines, comment markers removed, in path order.
    pub copyrights: Vec<String>,
    /// Licenses from `SPDX-License-Identifier:` and `MODULE_LICENSE("...")`.
    pub licenses: BTreeSet<String>,
}

/// Strips comment leaders and trailers from a source line.
fn uncomment(line: &str) -> String {
    let t = line
        .trim()
        .trim_start_matches(['/', '*', '#', ';', '!', '-'])
        .trim_end_matches("*/")
        .trim();
    t.to_string()
}

/// Whether a line is a copyright notice with a year.
fn is_notice(line: &str) -> bool {
    let lower = line.to_ascii_lowercase();
    let Some(at) = lower.find("copyright").or_else(|| lower.find('©')) else {
        return false;
    };
    let bytes = line.as_bytes();
    (at..bytes.len().saturating_sub(3)).any(|i| {
        bytes[i..i + 4].iter().all(u8::is_ascii_digit)
            && (i == 0 || !bytes[i - 1].is_ascii_digit())
            && bytes.get(i + 4).is_none_or(|b| !b.is_ascii_digit())
    })
}

/// Reads the notices of the text files below `dir` (sorted walk, symlinks not followed).
pub fn scan(dir: &Path) -> Notices {
    let mut n = Notices::default();
    let walk = walkdir::WalkDir::new(dir)
        .follow_links(false)
        .sort_by_file_name();
    for entry in walk.into_iter().filter_map(|e| e.ok()) {
        if !entry.file_type().is_file() || entry.metadata().map_or(true, |m| m.len() > MAX_FILE) {
            continue;
        }
        let mut head = Vec::new();
        let Ok(f) = fs::File::open(entry.path()) else {
            continue;
        };
        if f.take(HEAD_BYTES).read_to_end(&mut head).is_err() || head.contains(&0) {
            continue;
        }
        let text = String::from_utf8_lossy(&head);
        for line in text.lines() {
            if let Some(id) = line.split("SPDX-License-Identifier:").nth(1) {
                n.licenses.insert(uncomment(id));
            } else if is_notice(line) {
                let l = uncomment(line);
                if n.copyrights.len() < MAX_NOTICES && !n.copyrights.contains(&l) {
                    n.copyrights.push(l);
                }
            }
        }
        if entry.path().extension().is_some_and(|e| e == "c") {
            let Ok(all) = fs::read_to_string(entry.path()) else {
                continue;
            };
            for part in all.split("MODULE_LICENSE(\"").skip(1) {
                if let Some(lic) = part.split('"').next() {
                    n.licenses.insert(lic.to_string());
                }
            }
        }
    }
    n
}

/// The copyright file: `origin` (a paragraph saying what the package is made from), then the
/// notices and licenses quoted from the sources, or a pointer to them when there are none.
pub fn text(origin: &str, sources: &str, n: &Notices) -> String {
    let mut s = format!("{origin}\n\n");
    if n.copyrights.is_empty() {
        s.push_str(&format!(
            "The sources ({sources}) carry no copyright line; their authors hold the copyright.\n"
        ));
    } else {
        s.push_str(&format!(
            "Copyright notices found in the sources ({sources}):\n"
        ));
        for c in &n.copyrights {
            s.push_str(&format!("  {c}\n"));
        }
    }
    if !n.licenses.is_empty() {
        let l: Vec<&str> = n.licenses.iter().map(String::as_str).collect();
        s.push_str(&format!(
            "\nLicenses declared in the sources: {}.\n",
            l.join(", ")
        ));
        if n.licenses.iter().any(|l| l.starts_with("GPL")) {
            s.push_str("The GNU General Public License is in /usr/share/common-licenses/.\n");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_and_licenses_come_from_the_sources() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(
            tmp.path().join("a.c"),
            "// SPDX-License-Identifier: GPL-2.0\n/* Copyright (c) 2010: Jane Doe */\nMODULE_LICENSE(\"GPL\");\n",
        )
        .unwrap();
        fs::write(
            tmp.path().join("b.h"),
            " * Copyright 2012-2014 Ann Other\n * copyright holders\n",
        )
        .unwrap();
        fs::write(tmp.path().join("blob.bin"), b"Copyright 1999\0\x01").unwrap();
        let n = scan(tmp.path());
        assert_eq!(
            n.copyrights,
            [
                "Copyright (c) 2010: Jane Doe",
                "Copyright 2012-2014 Ann Other"
            ]
        );
        assert_eq!(n.licenses.iter().collect::<Vec<_>>(), ["GPL", "GPL-2.0"]);
        let t = text("Made from x.", "/usr/src/x-1", &n);
        assert!(t.contains("\n  Copyright 2012-2014 Ann Other\n"));
        assert!(t.contains("Licenses declared in the sources: GPL, GPL-2.0."));
    }

    #[test]
    fn notice_needs_a_year() {
        assert!(is_notice("Copyright (C) 2023 X"));
        assert!(!is_notice("copyright holders and contributors"));
        assert!(!is_notice("Copyright 123456"));
    }
}

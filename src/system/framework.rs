//! DKMS's framework configuration: `/etc/dkms/framework.conf`, then every
//! `/etc/dkms/framework.conf.d/*.conf` in glob order (DKMS 3.2.2; Debian 13 ships
//! `autoinstall_all_kernels.conf` there), later assignments winning. Read as plain
//! `name=value` lines, so no shell runs and every hook can afford it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::system::config::Paths;

/// The files in the order DKMS sources them.
pub fn files(paths: &Paths) -> Vec<PathBuf> {
    let mut files = vec![paths.etc_dkms.join("framework.conf")];
    if let Ok(rd) = std::fs::read_dir(paths.etc_dkms.join("framework.conf.d")) {
        let mut more: Vec<PathBuf> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "conf"))
            .collect();
        more.sort();
        files.extend(more);
    }
    files
}

/// Every `name=value` assignment of the framework files (`export` allowed, one level of
/// quotes removed, `# comments` dropped), the last one of each name winning, with the file
/// that set it.
pub fn settings(paths: &Paths) -> BTreeMap<String, (String, PathBuf)> {
    let mut found = BTreeMap::new();
    for f in files(paths) {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        for line in text.lines() {
            let line = line.trim();
            let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
            let Some((name, value)) = line.split_once('=') else {
                continue;
            };
            let name = name.trim_end();
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            let value = value.split(" #").next().unwrap_or("").trim();
            let value = value.trim_matches('"').trim_matches('\'');
            found.insert(name.to_string(), (value.to_string(), f.clone()));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn conf_d_files_follow_framework_conf_in_glob_order() {
        let root = tempfile::tempdir().unwrap();
        let p = Paths::under(root.path());
        fs::create_dir_all(p.etc_dkms.join("framework.conf.d")).unwrap();
        fs::write(
            p.etc_dkms.join("framework.conf"),
            "# comment\nsign_file=/a\n#mok_signing_key=/no\nexport mok_certificate='/c' # note\n",
        )
        .unwrap();
        fs::write(
            p.etc_dkms.join("framework.conf.d/b.conf"),
            "sign_file=\"/b\"\n",
        )
        .unwrap();
        fs::write(p.etc_dkms.join("framework.conf.d/a.conf"), "sign_file=/x\n").unwrap();
        fs::write(
            p.etc_dkms.join("framework.conf.d/c.txt"),
            "sign_file=/ignored\n",
        )
        .unwrap();
        let s = settings(&p);
        assert_eq!(s["sign_file"].0, "/b");
        assert!(s["sign_file"].1.ends_with("b.conf"));
        assert_eq!(s["mok_certificate"].0, "/c");
        assert!(!s.contains_key("mok_signing_key"));
    }
}

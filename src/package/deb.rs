//! Debian binary packages, written reproducibly: a package is planned as plain data (control
//! fields, files, maintainer scripts, one timestamp), staged with fixed modes and times, and
//! handed to `dpkg-deb --build` with fixed options, so the same input always gives the same bytes.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;

use crate::base::date::Utc;
use crate::base::error::{Error, IoContext, Result};
use crate::base::tool;
use crate::system::console::Console;

pub use crate::base::arch::{debian_arch, kernel_arch};

/// Maintainer written when the environment names nobody. `.invalid` (RFC 2606) is a domain that
/// never resolves, which says "no real address" honestly; lintian rejects `localhost` and `root`.
pub const DEFAULT_MAINTAINER: &str = "rdkms <rdkms@localhost.invalid>";

/// What one file of the package holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// A copy of a file on disk; `size` is its length, for Installed-Size.
    File { from: PathBuf, size: u64 },
    /// Literal bytes (generated documentation).
    Bytes(Vec<u8>),
    /// A symbolic link with this target.
    Symlink(PathBuf),
    /// A directory (parents of files are created anyway; this keeps empty ones).
    Dir,
}

/// One filesystem entry of the package, at `path` relative to `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: PathBuf,
    pub content: Content,
    /// Permission bits (directories are always 0755).
    pub mode: u32,
}

/// A planned package and the file name it gets (`NAME_VERSION_ARCH.deb`).
#[derive(Debug, Clone)]
pub struct PackagePlan {
    pub file_name: String,
    pub package: Package,
}

/// A complete binary package: what `dpkg-deb --build` needs, and nothing that varies by host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// Control fields in output order; multi-line values carry their own `\n ` continuations.
    pub fields: Vec<(&'static str, String)>,
    pub entries: Vec<Entry>,
    /// Maintainer scripts by name (`postinst`, `prerm`, `postrm`).
    pub scripts: Vec<(&'static str, String)>,
    /// Every timestamp in the archive (SOURCE_DATE_EPOCH semantics).
    pub epoch: u64,
}

impl Package {
    /// The value of a control field.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `DEBIAN/control` text.
    pub fn control(&self) -> String {
        self.fields
            .iter()
            .map(|(n, v)| format!("{n}: {v}\n"))
            .collect()
    }
}

/// Installed-Size in KiB, counted as dpkg-gencontrol does: each regular file rounded up to whole
/// KiB, 1 KiB for each directory (the top one included) and each symlink.
pub fn installed_size(entries: &[Entry]) -> u64 {
    let mut dirs: BTreeSet<&Path> = BTreeSet::new();
    dirs.insert(Path::new(""));
    let mut size = 0;
    for e in entries {
        for a in e.path.ancestors().skip(1) {
            dirs.insert(a);
        }
        match &e.content {
            Content::File { size: s, .. } => size += s.div_ceil(1024),
            Content::Bytes(b) => size += (b.len() as u64).div_ceil(1024),
            Content::Symlink(_) => size += 1,
            Content::Dir => {
                dirs.insert(&e.path);
            }
        }
    }
    size + dirs.len() as u64
}

/// A DKMS module name as a Debian package-name part: lower case, `_` becomes `-` (as DKMS 2's
/// mkbmdeb did). Fails if the result is still not a valid package name.
pub fn name_part(module: &str) -> Result<String> {
    let name = module.to_ascii_lowercase().replace('_', "-");
    check_package_name(&name)?;
    Ok(name)
}

/// Debian policy 5.6.1: at least two characters of `[a-z0-9+.-]`, starting alphanumeric.
pub fn check_package_name(name: &str) -> Result<()> {
    let ok = name.len() >= 2
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::Packaging {
            package: name.to_string(),
            problem: format!(
                "'{name}' is not a valid Debian package name (use lower-case letters, digits and + . -)."
            ),
        })
    }
}

/// A module version as a Debian version: starts with a digit and uses `[A-Za-z0-9.+~-]`. Epochs
/// (`1:`) are refused because they cannot appear in the .deb file name DKMS users expect.
pub fn check_version(package: &str, version: &str) -> Result<()> {
    let ok = version.starts_with(|c: char| c.is_ascii_digit())
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".+~-".contains(c))
        && !version.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::Packaging {
            package: package.to_string(),
            problem: format!(
                "version '{version}' is not a Debian version: it must start with a digit and use only letters, digits and . + ~ - (change PACKAGE_VERSION in dkms.conf)."
            ),
        })
    }
}

/// The package maintainer, found the way dch finds it: DEBEMAIL (which may be `Name <addr>`) or
/// EMAIL for the address, DEBFULLNAME or NAME for the name; `DEFAULT_MAINTAINER` otherwise.
pub fn maintainer(env: impl Fn(&str) -> Option<String>) -> String {
    let get = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    let Some(email) = get("DEBEMAIL").or_else(|| get("EMAIL")) else {
        return DEFAULT_MAINTAINER.to_string();
    };
    if email.contains('<') {
        return email.trim().to_string();
    }
    let name = get("DEBFULLNAME")
        .or_else(|| get("NAME"))
        .unwrap_or_else(|| "rdkms".into());
    format!("{} <{}>", name.trim(), email.trim())
}

/// The maintainer from the process environment.
pub fn maintainer_from_env() -> String {
    maintainer(|k| std::env::var(k).ok())
}

/// SOURCE_DATE_EPOCH if set: the timestamp reproducible builds agree on.
pub fn source_date_epoch() -> Result<Option<u64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Err(_) => Ok(None),
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => v.trim().parse().map(Some).map_err(|_| {
            Error::Usage(format!(
                "SOURCE_DATE_EPOCH='{v}' is not a number of seconds since 1970; unset it or set it to e.g. $(date +%s)."
            ))
        }),
    }
}

/// The newest modification time among `files` (0 if none can be read): the default timestamp,
/// so that packaging the same build twice gives the same bytes.
pub fn newest_mtime<'a>(files: impl IntoIterator<Item = &'a Path>) -> u64 {
    files
        .into_iter()
        .filter_map(|f| fs::metadata(f).ok()?.modified().ok())
        .filter_map(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .max()
        .unwrap_or(0)
}

/// A date as Debian changelogs write it (RFC 5322), in UTC.
pub fn rfc2822(epoch: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let t = Utc::from_epoch(i64::try_from(epoch).unwrap_or(i64::MAX));
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} +0000",
        DAYS[t.weekday],
        t.day,
        MONTHS[(t.month - 1) as usize],
        t.year,
        t.hour,
        t.minute,
        t.second
    )
}

/// Name of the changelog Debian policy wants: native versions (no `-`) get `changelog.gz`.
pub fn changelog_name(version: &str) -> &'static str {
    if version.contains('-') {
        "changelog.Debian.gz"
    } else {
        "changelog.gz"
    }
}

/// A one-entry Debian changelog, uncompressed.
pub fn changelog_text(
    package: &str,
    version: &str,
    change: &str,
    maintainer: &str,
    epoch: u64,
) -> String {
    format!(
        "{package} ({version}) unstable; urgency=medium\n\n{}\n -- {maintainer}  {}\n",
        wrap_item(change),
        rfc2822(epoch)
    )
}

/// `text` as lines of at most 80 columns: the first starts with `first`, the others with `rest`
/// (each followed by a space), breaking between words.
fn wrap(text: &str, first: &str, rest: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = first.to_string();
    let mut empty = true;
    for word in text.split_whitespace() {
        if !empty && line.len() + 1 + word.len() > 80 {
            lines.push(std::mem::replace(&mut line, rest.to_string()));
        }
        line.push(' ');
        line.push_str(word);
        empty = false;
    }
    lines.push(line);
    lines
}

/// A changelog item (`  * text`) wrapped at 80 columns, continuation lines indented by four.
fn wrap_item(text: &str) -> String {
    wrap(text, "  *", "   ").join("\n") + "\n"
}

/// A control-field description: the synopsis, then each given line of the extended text
/// wrapped at 80 columns (lintian's limit), as `Description` continuation lines.
pub fn description(synopsis: &str, lines: &[&str]) -> String {
    let mut out = synopsis.to_string();
    for l in lines {
        for w in wrap(l, "", "") {
            out.push('\n');
            out.push_str(&w);
        }
    }
    out
}

/// Compresses documentation the way dh_compress does: `gzip -9n`, no name or time in the header.
pub fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    tool::filter(Command::new("gzip").args(["-9nc"]), data.to_vec())
}

/// Refuses entry paths that are absolute or climb with `..`: a plan must stay inside its root.
fn check_entry_path(path: &Path) -> Result<()> {
    let ok = !path.as_os_str().is_empty()
        && path.components().all(|c| matches!(c, Component::Normal(_)));
    if ok {
        Ok(())
    } else {
        Err(Error::PathEscape {
            file: path.to_path_buf(),
            what: "package entry".into(),
            value: path.display().to_string(),
        })
    }
}

/// Sets one timestamp on an entry without following symlinks.
fn set_time(path: &Path, epoch: u64) -> Result<()> {
    let t = TimeSpec::new(epoch as i64, 0);
    utimensat(None, path, &t, &t, UtimensatFlags::NoFollowSymlink)
        .map_err(|e| Error::io("set the time of", path, e.into()))
}

/// Writes the package tree under `root` (including `DEBIAN/`), with fixed modes and times.
fn stage(pkg: &Package, root: &Path) -> Result<()> {
    let mut entries: Vec<&Entry> = pkg.entries.iter().collect();
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let mut regular = Vec::new();
    for e in entries {
        check_entry_path(&e.path)?;
        let dest = root.join(&e.path);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).ctx("create", parent)?;
        }
        match &e.content {
            Content::File { from, .. } => {
                fs::copy(from, &dest).ctx("copy", from)?;
                regular.push(e.path.clone());
            }
            Content::Bytes(b) => {
                fs::write(&dest, b).ctx("write", &dest)?;
                regular.push(e.path.clone());
            }
            Content::Symlink(target) => {
                std::os::unix::fs::symlink(target, &dest).ctx("create the symlink", &dest)?
            }
            Content::Dir => fs::create_dir_all(&dest).ctx("create", &dest)?,
        }
        if !matches!(e.content, Content::Symlink(_) | Content::Dir) {
            fs::set_permissions(&dest, fs::Permissions::from_mode(e.mode & 0o7777))
                .ctx("set the mode of", &dest)?;
        }
    }
    let control = root.join("DEBIAN");
    fs::create_dir_all(&control).ctx("create", &control)?;
    let mut meta = vec![("control", pkg.control().into_bytes(), 0o644)];
    if !regular.is_empty() {
        meta.push(("md5sums", md5sums(root, &regular)?, 0o644));
    }
    for (name, text) in &pkg.scripts {
        meta.push((name, text.clone().into_bytes(), 0o755));
    }
    for (name, bytes, mode) in meta {
        let path = control.join(name);
        fs::write(&path, bytes).ctx("write", &path)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .ctx("set the mode of", &path)?;
    }
    for entry in walkdir::WalkDir::new(root).contents_first(true) {
        let entry = entry.map_err(|e| Error::walk(root, e))?;
        if entry.file_type().is_dir() {
            fs::set_permissions(entry.path(), fs::Permissions::from_mode(0o755))
                .ctx("set the mode of", entry.path())?;
        }
        set_time(entry.path(), pkg.epoch)?;
    }
    Ok(())
}

/// `DEBIAN/md5sums` for the regular files (sorted relative paths), computed by md5sum.
fn md5sums(root: &Path, files: &[PathBuf]) -> Result<Vec<u8>> {
    let mut cmd = Command::new("md5sum");
    cmd.current_dir(root).arg("--").args(files);
    Ok(tool::run(&mut cmd)?.stdout)
}

/// Builds a planned package into `out_dir` and reports it as the packaging commands do: a line
/// naming the package on stderr (unless `quiet`) and the path on stdout, which scripts read.
pub fn publish(plan: &PackagePlan, out_dir: &Path, kind: &str, quiet: bool) -> Result<()> {
    let path = build(&plan.package, out_dir, &plan.file_name)?;
    let console = Console::plain(quiet);
    console.say(format!(
        "{kind} {} ({}) written.",
        plan.package.field("Package").unwrap_or_default(),
        plan.package.field("Version").unwrap_or_default()
    ));
    println!("{}", path.display());
    Ok(())
}

/// Builds `pkg` into `out_dir/file_name` and returns that path. The package is staged and built
/// in a temporary directory inside `out_dir` and renamed into place only when complete.
pub fn build(pkg: &Package, out_dir: &Path, file_name: &str) -> Result<PathBuf> {
    fs::create_dir_all(out_dir).ctx("create", out_dir)?;
    let work = tempfile::Builder::new()
        .prefix(".rdkms-deb-")
        .tempdir_in(out_dir)
        .ctx("create a staging directory in", out_dir)?;
    let root = work.path().join("root");
    fs::create_dir(&root).ctx("create", &root)?;
    stage(pkg, &root)?;
    let built = work.path().join(file_name);
    let mut cmd = Command::new("dpkg-deb");
    cmd.args([
        "--root-owner-group",
        "--uniform-compression",
        "-Zxz",
        "-z6",
        "--threads-max=1",
        "--build",
    ])
    .arg(&root)
    .arg(&built)
    .env("SOURCE_DATE_EPOCH", pkg.epoch.to_string())
    .env_remove("DPKG_DEB_COMPRESSOR_TYPE")
    .env_remove("DPKG_DEB_COMPRESSOR_LEVEL")
    .env_remove("DPKG_DEB_THREADS_MAX");
    tool::run(&mut cmd)?;
    fs::File::open(&built)
        .and_then(|f| f.sync_all())
        .ctx("sync", &built)?;
    let dest = out_dir.join(file_name);
    fs::rename(&built, &dest).ctx("move into place", &dest)?;
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arches_map_both_ways() {
        for (k, d) in [
            ("x86_64", "amd64"),
            ("aarch64", "arm64"),
            ("i686", "i386"),
            ("i586", "i386"),
            ("armv7l", "armhf"),
            ("ppc64le", "ppc64el"),
            ("s390x", "s390x"),
            ("riscv64", "riscv64"),
        ] {
            assert_eq!(debian_arch(k), Some(d), "{k}");
            assert_eq!(debian_arch(kernel_arch(d)), Some(d), "{d}");
        }
        assert_eq!(debian_arch("vax"), None);
        assert_eq!(kernel_arch("amd64"), "x86_64");
    }

    #[test]
    fn names_and_versions_follow_policy() {
        assert_eq!(name_part("Acpi_Call").unwrap(), "acpi-call");
        assert!(name_part("a").is_err());
        assert!(check_package_name("hello-modules-6.1.0-56-amd64").is_ok());
        assert!(check_package_name("-x").is_err());
        for good in ["1.0", "0.1dev+git20220316.e5c53d64", "2.6-4", "1~rc1"] {
            assert!(check_version("p", good).is_ok(), "{good}");
        }
        for bad in ["v1.0", "1:2.0", "1.0 beta", "", "1-"] {
            assert!(check_version("p", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn maintainer_follows_dch_conventions() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(maintainer(env(&[])), DEFAULT_MAINTAINER);
        assert_eq!(
            maintainer(env(&[
                ("DEBEMAIL", "ops@example.org"),
                ("DEBFULLNAME", "Ops")
            ])),
            "Ops <ops@example.org>"
        );
        assert_eq!(
            maintainer(env(&[
                ("DEBEMAIL", "CI <ci@example.org>"),
                ("EMAIL", "x@y.z")
            ])),
            "CI <ci@example.org>"
        );
        assert_eq!(
            maintainer(env(&[("EMAIL", "me@example.org")])),
            "rdkms <me@example.org>"
        );
    }

    #[test]
    fn dates_are_rfc2822_utc() {
        assert_eq!(rfc2822(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc2822(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
        assert_eq!(rfc2822(1_700_000_000), "Tue, 14 Nov 2023 22:13:20 +0000");
    }

    #[test]
    fn installed_size_counts_like_dpkg_gencontrol() {
        let e = |p: &str, content| Entry {
            path: p.into(),
            content,
            mode: 0o644,
        };
        let entries = vec![
            e(
                "a/b/x.ko",
                Content::File {
                    from: "/x".into(),
                    size: 1025,
                },
            ),
            e("a/c", Content::Bytes(vec![0; 10])),
            e("a/l", Content::Symlink("c".into())),
            e("d", Content::Dir),
        ];
        // files 2 + 1, symlink 1, dirs: top, a, a/b, d.
        assert_eq!(installed_size(&entries), 2 + 1 + 1 + 4);
    }

    #[test]
    fn changelog_items_wrap_at_80_columns() {
        let text = changelog_text("p", "1", &"word ".repeat(40), DEFAULT_MAINTAINER, 0);
        assert!(text.lines().all(|l| l.len() <= 80), "{text}");
        assert!(text.contains("\n  * word word"));
        assert!(text.contains("\n    word"));
        assert!(text
            .ends_with(" -- rdkms <rdkms@localhost.invalid>  Thu, 01 Jan 1970 00:00:00 +0000\n"));
    }

    #[test]
    fn descriptions_keep_given_breaks_and_wrap_long_lines() {
        let d = description("syn", &["short line,", &"long ".repeat(30)]);
        let lines: Vec<&str> = d.lines().collect();
        assert_eq!(lines[0], "syn");
        assert_eq!(lines[1], " short line,");
        assert!(lines[2..]
            .iter()
            .all(|l| l.starts_with(" long") && l.len() <= 80));
        assert_eq!(lines.len(), 4);
    }

    #[test]
    fn changelog_name_depends_on_nativeness() {
        assert_eq!(changelog_name("1.0"), "changelog.gz");
        assert_eq!(changelog_name("1.0-2"), "changelog.Debian.gz");
    }

    #[test]
    fn entry_paths_cannot_escape() {
        assert!(check_entry_path(Path::new("lib/x.ko")).is_ok());
        for bad in ["/lib/x.ko", "../x", "a/../../x", "./a", ""] {
            assert!(check_entry_path(Path::new(bad)).is_err(), "{bad}");
        }
    }
}

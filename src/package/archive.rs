//! Tar archives read and written safely: every member of an untrusted archive is checked before
//! anything is extracted (no absolute paths, no `..`, no links leading out, no device files),
//! and archives rdkms writes are reproducible (sorted, root-owned, clamped times).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;

use crate::base::error::{Error, IoContext, Result};

/// How an archive is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Xz,
    Bzip2,
    Zstd,
}

impl Compression {
    /// The compression `tar -a` picks for a file name.
    pub fn for_name(name: &str) -> Compression {
        let n = name.to_ascii_lowercase();
        if n.ends_with(".gz") || n.ends_with(".tgz") {
            Compression::Gzip
        } else if n.ends_with(".xz") || n.ends_with(".txz") {
            Compression::Xz
        } else if n.ends_with(".bz2") || n.ends_with(".tbz2") || n.ends_with(".tbz") {
            Compression::Bzip2
        } else if n.ends_with(".zst") || n.ends_with(".tzst") {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// The compression of existing data, from its magic bytes.
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Compression::Xz
        } else if head.starts_with(b"BZh") {
            Compression::Bzip2
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// The command compressing stdin to stdout, with options that make the output depend on
    /// the input only (no name or time in gzip headers, single-threaded xz and zstd).
    fn compressor(self) -> Option<Command> {
        let (prog, args): (&str, &[&str]) = match self {
            Compression::None => return None,
            Compression::Gzip => ("gzip", &["-9nc"]),
            Compression::Xz => ("xz", &["-6", "-T1", "-c"]),
            Compression::Bzip2 => ("bzip2", &["-9c"]),
            Compression::Zstd => ("zstd", &["-19", "-T1", "-q", "-c"]),
        };
        let mut c = Command::new(prog);
        c.args(args);
        Some(c)
    }

    fn decompressor(self) -> Option<Command> {
        let prog = match self {
            Compression::None => return None,
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
            Compression::Bzip2 => "bzip2",
            Compression::Zstd => "zstd",
        };
        let mut c = Command::new(prog);
        c.args(["-dc"]);
        Some(c)
    }
}

/// Whether a symlink at `link` (relative to the tree root) with `target` resolves inside the
/// tree, following other links of the tree through `symlink_at` (which returns the target of
/// the tree's symlink at a relative path). Absolute targets, climbing above the root and loops
/// count as leading out.
pub fn resolves_inside(
    link: &Path,
    target: &Path,
    symlink_at: &dyn Fn(&Path) -> Option<PathBuf>,
) -> bool {
    if target.is_absolute() {
        return false;
    }
    /// One step of a path still to walk: a name, or `..`.
    enum Step {
        Name(OsString),
        Up,
    }
    fn push_front(steps: &mut VecDeque<Step>, p: &Path) {
        for c in p.components().rev() {
            match c {
                Component::Normal(n) => steps.push_front(Step::Name(n.to_os_string())),
                Component::ParentDir => steps.push_front(Step::Up),
                _ => {}
            }
        }
    }
    // The directory reached so far, as names below the root; links are normal paths.
    let mut dir: Vec<OsString> = link
        .parent()
        .into_iter()
        .flat_map(Path::components)
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            _ => None,
        })
        .collect();
    let mut steps = VecDeque::new();
    push_front(&mut steps, target);
    let mut hops = 0;
    while let Some(step) = steps.pop_front() {
        match step {
            Step::Up => {
                if dir.pop().is_none() {
                    return false;
                }
            }
            Step::Name(n) => {
                let mut here: PathBuf = dir.iter().collect();
                here.push(&n);
                match symlink_at(&here) {
                    Some(t) => {
                        hops += 1;
                        if hops > 40 || t.is_absolute() {
                            return false;
                        }
                        push_front(&mut steps, &t);
                    }
                    None => dir.push(n),
                }
            }
        }
    }
    true
}

/// Whether a symlink inside the directory tree `root` stays inside it, resolved on disk.
pub fn link_stays_inside(root: &Path, link: &Path, target: &Path) -> bool {
    let at = |rel: &Path| fs::read_link(root.join(rel)).ok();
    resolves_inside(link, target, &at)
}

/// What one member of an archive is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    File {
        mode: u32,
        mtime: u64,
    },
    Dir,
    Symlink(PathBuf),
    /// A hard link to an earlier regular-file member.
    Hardlink(PathBuf),
}

/// One checked member: a normal relative path and its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub path: PathBuf,
    pub kind: Kind,
}

/// A member path made relative and normal (`./a//b` → `a/b`); `None` for the archive root,
/// an error for absolute paths and `..`.
fn member_path(archive: &Path, raw: &Path) -> Result<Option<PathBuf>> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) | Component::ParentDir => {
                return Err(Error::PathEscape {
                    file: archive.to_path_buf(),
                    what: "archive member".into(),
                    value: raw.display().to_string(),
                })
            }
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

fn bad(archive: &Path, problem: String) -> Error {
    Error::BadArchive {
        archive: archive.to_path_buf(),
        problem,
    }
}

/// Checks a list of members as a whole: unique paths, nothing below a symlink, hard links to
/// earlier files, symlinks resolving inside the tree.
pub fn check_members(archive: &Path, members: &[Member]) -> Result<()> {
    let mut seen: HashMap<&Path, &Kind> = HashMap::new();
    for m in members {
        if let Some(prev) = seen.get(m.path.as_path()) {
            if !(**prev == Kind::Dir && m.kind == Kind::Dir) {
                return Err(bad(
                    archive,
                    format!("member '{}' appears twice", m.path.display()),
                ));
            }
        }
        for a in m.path.ancestors().skip(1) {
            if let Some(Kind::Symlink(_)) = seen.get(a) {
                return Err(Error::PathEscape {
                    file: archive.to_path_buf(),
                    what: "archive member below a symlink".into(),
                    value: m.path.display().to_string(),
                });
            }
        }
        if let Kind::Hardlink(t) = &m.kind {
            if !matches!(seen.get(t.as_path()), Some(Kind::File { .. })) {
                return Err(Error::PathEscape {
                    file: archive.to_path_buf(),
                    what: format!("hard link '{}' to", m.path.display()),
                    value: t.display().to_string(),
                });
            }
        }
        seen.insert(&m.path, &m.kind);
    }
    let links: BTreeMap<&Path, &Path> = members
        .iter()
        .filter_map(|m| match &m.kind {
            Kind::Symlink(t) => Some((m.path.as_path(), t.as_path())),
            _ => None,
        })
        .collect();
    let at = |p: &Path| links.get(p).map(|t| t.to_path_buf());
    for (link, target) in &links {
        if !resolves_inside(link, target, &at) {
            return Err(Error::PathEscape {
                file: archive.to_path_buf(),
                what: format!("symlink '{}' pointing to", link.display()),
                value: target.display().to_string(),
            });
        }
    }
    Ok(())
}

/// Decompresses `archive` into a temporary plain tar file inside `work`.
fn plain_tar(archive: &Path, work: &Path) -> Result<tempfile::NamedTempFile> {
    let mut head = [0u8; 8];
    let n = File::open(archive)
        .and_then(|mut f| f.read(&mut head))
        .ctx("read", archive)?;
    let tmp = tempfile::NamedTempFile::new_in(work).ctx("create a file in", work)?;
    match Compression::sniff(&head[..n]).decompressor() {
        None => {
            fs::copy(archive, tmp.path()).ctx("read", archive)?;
        }
        Some(mut cmd) => {
            let out = tmp.reopen().ctx("write", tmp.path())?;
            let input = File::open(archive).ctx("read", archive)?;
            let status = cmd
                .stdin(Stdio::from(input))
                .stdout(Stdio::from(out))
                .stderr(Stdio::null())
                .status()
                .ctx("decompress", archive)?;
            if !status.success() {
                return Err(bad(archive, "it cannot be decompressed".into()));
            }
        }
    }
    Ok(tmp)
}

/// Lists and checks every member of a plain tar file without extracting anything.
fn read_members(archive: &Path, tar_file: &Path) -> Result<Vec<Member>> {
    let mut ar = tar::Archive::new(File::open(tar_file).ctx("read", tar_file)?);
    let mut out = Vec::new();
    let broken =
        |e: std::io::Error| bad(archive, format!("it is not a readable tar archive ({e})"));
    for entry in ar.entries().map_err(broken)? {
        let entry = entry.map_err(broken)?;
        let header = entry.header();
        let raw = entry.path().map_err(broken)?.into_owned();
        let kind = match header.entry_type() {
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => continue,
            tar::EntryType::Regular | tar::EntryType::Continuous => Kind::File {
                mode: header.mode().unwrap_or(0o644),
                mtime: header.mtime().unwrap_or(0),
            },
            tar::EntryType::Directory => Kind::Dir,
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(broken)?
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                if header.entry_type() == tar::EntryType::Symlink {
                    if target.is_absolute() {
                        return Err(Error::PathEscape {
                            file: archive.to_path_buf(),
                            what: format!("symlink '{}' pointing to", raw.display()),
                            value: target.display().to_string(),
                        });
                    }
                    Kind::Symlink(target)
                } else {
                    let escape = || Error::PathEscape {
                        file: archive.to_path_buf(),
                        what: format!("hard link '{}' to", raw.display()),
                        value: target.display().to_string(),
                    };
                    match member_path(archive, &target).map_err(|_| escape())? {
                        Some(t) => Kind::Hardlink(t),
                        None => return Err(escape()),
                    }
                }
            }
            other => {
                return Err(bad(
                    archive,
                    format!(
                        "member '{}' is a {:?}, not a file, directory or link",
                        raw.display(),
                        other
                    ),
                ))
            }
        };
        let Some(path) = member_path(archive, &raw)? else {
            continue;
        };
        out.push(Member { path, kind });
    }
    check_members(archive, &out)?;
    Ok(out)
}

/// Extracts a (possibly compressed) tar archive into the empty directory `dest`, after checking
/// every member. Files get mode 0755 or 0644 (no set-id bits), directories 0755, and the
/// archive's modification times; nothing is ever written through a symlink.
pub fn extract(archive: &Path, dest: &Path) -> Result<Vec<Member>> {
    let work = dest.parent().unwrap_or(Path::new("."));
    let tar_file = plain_tar(archive, work)?;
    let members = read_members(archive, tar_file.path())?;
    let mut ar = tar::Archive::new(File::open(tar_file.path()).ctx("read", tar_file.path())?);
    let broken = |e: std::io::Error| bad(archive, format!("it cannot be read ({e})"));
    let mut next = members.iter();
    let mut links = Vec::new();
    for entry in ar.entries().map_err(broken)? {
        let mut entry = entry.map_err(broken)?;
        if matches!(
            entry.header().entry_type(),
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader
        ) {
            continue;
        }
        let raw = entry.path().map_err(broken)?.into_owned();
        if member_path(archive, &raw)?.is_none() {
            continue;
        }
        let Some(m) = next.next() else {
            return Err(bad(archive, "it changed while being read".into()));
        };
        let to = dest.join(&m.path);
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent).ctx("create", parent)?;
        }
        match &m.kind {
            Kind::Dir => fs::create_dir_all(&to).ctx("create", &to)?,
            Kind::File { mode, mtime } => {
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&to)
                    .ctx("create", &to)?;
                std::io::copy(&mut entry, &mut f).ctx("write", &to)?;
                f.flush().ctx("write", &to)?;
                let mode = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
                fs::set_permissions(&to, fs::Permissions::from_mode(mode))
                    .ctx("set the mode of", &to)?;
                let t = TimeSpec::new(*mtime as i64, 0);
                utimensat(None, &to, &t, &t, UtimensatFlags::NoFollowSymlink)
                    .map_err(|e| Error::io("set the time of", &to, e.into()))?;
            }
            Kind::Hardlink(t) => {
                fs::hard_link(dest.join(t), &to).ctx("link", &to)?;
            }
            Kind::Symlink(t) => links.push((to, t.clone())),
        }
    }
    for (to, target) in links {
        std::os::unix::fs::symlink(&target, &to).ctx("create the symlink", &to)?;
    }
    Ok(members)
}

/// Where an entry of an archive being written comes from.
#[derive(Debug, Clone)]
enum Source {
    Disk(PathBuf),
    Bytes(Vec<u8>),
    Dir,
}

/// An archive to write: entries keyed by path, so they come out sorted, under `./` as
/// `tar -C DIR .` names them.
#[derive(Debug, Default)]
pub struct Builder {
    entries: BTreeMap<PathBuf, Source>,
}

impl Builder {
    pub fn new() -> Builder {
        Builder::default()
    }

    /// An (empty) directory and its parents.
    pub fn dir(&mut self, at: impl AsRef<Path>) {
        for a in at.as_ref().ancestors() {
            if !a.as_os_str().is_empty() {
                self.entries.entry(a.to_path_buf()).or_insert(Source::Dir);
            }
        }
    }

    /// A file with literal contents.
    pub fn bytes(&mut self, at: impl AsRef<Path>, data: Vec<u8>) {
        if let Some(p) = at.as_ref().parent() {
            self.dir(p);
        }
        self.entries
            .insert(at.as_ref().to_path_buf(), Source::Bytes(data));
    }

    /// A copy of a file, symlink or whole directory tree on disk; `skip_hidden` leaves out the
    /// top level's dot files, as DKMS's `cp -r dir/*` does.
    pub fn tree(&mut self, at: impl AsRef<Path>, from: &Path, skip_hidden: bool) -> Result<()> {
        let at = at.as_ref();
        self.dir(at);
        let walk = walkdir::WalkDir::new(from).min_depth(1).follow_links(false);
        let walk = walk.into_iter().filter_entry(|e| {
            !(skip_hidden && e.depth() == 1 && e.file_name().to_string_lossy().starts_with('.'))
        });
        for entry in walk {
            let entry = entry.map_err(|e| Error::walk(from, e))?;
            let rel = entry.path().strip_prefix(from).unwrap_or(entry.path());
            self.entries
                .insert(at.join(rel), Source::Disk(entry.path().to_path_buf()));
        }
        Ok(())
    }

    /// The newest modification time of the files taken from disk (0 if none).
    pub fn newest_mtime(&self) -> u64 {
        crate::package::deb::newest_mtime(self.entries.values().filter_map(|s| match s {
            Source::Disk(p) => Some(p.as_path()),
            _ => None,
        }))
    }

    /// Writes the archive to `dest` (through a temporary file in the same directory, renamed when
    /// complete). Entries are root-owned; times are the files' own, clamped to `epoch`, which is
    /// also the time of generated entries.
    pub fn write(&self, dest: &Path, compression: Compression, epoch: u64) -> Result<()> {
        let dir = dest.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).ctx("create", dir)?;
        let tmp = tempfile::NamedTempFile::new_in(dir).ctx("create a file in", dir)?;
        let out = tmp.reopen().ctx("write", tmp.path())?;
        match compression.compressor() {
            None => self.write_tar(out, epoch)?,
            Some(mut cmd) => {
                let mut child = cmd
                    .stdin(Stdio::piped())
                    .stdout(Stdio::from(out))
                    .spawn()
                    .map_err(|e| Error::ToolFailed {
                        tool: format!("{:?}", cmd.get_program()),
                        status: "not started".into(),
                        message: e.to_string(),
                    })?;
                let stdin = child.stdin.take();
                let written = match stdin {
                    Some(s) => self.write_tar(s, epoch),
                    None => Ok(()),
                };
                let status = child.wait().ctx("compress", dest)?;
                written?;
                if !status.success() {
                    return Err(Error::ToolFailed {
                        tool: format!("{:?}", cmd.get_program()),
                        status: format!("{status}"),
                        message: format!("compressing {}", dest.display()),
                    });
                }
            }
        }
        // A tarball is for others to load, like DKMS's (umask 022): not the temp file's 0600.
        tmp.as_file()
            .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .ctx("set permissions of", tmp.path())?;
        tmp.as_file().sync_all().ctx("sync", tmp.path())?;
        tmp.persist(dest)
            .map_err(|e| Error::io("move into place", dest, e.error))?;
        Ok(())
    }

    fn write_tar(&self, out: impl Write, epoch: u64) -> Result<()> {
        let mut b = tar::Builder::new(out);
        b.follow_symlinks(false);
        let io = |e: std::io::Error| Error::io("write", "tar archive", e);
        let header = |kind: tar::EntryType, mode: u32, mtime: u64, size: u64| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_uid(0);
            h.set_gid(0);
            let _ = h.set_username("root");
            let _ = h.set_groupname("root");
            h.set_mtime(mtime.min(epoch));
            h.set_size(size);
            h
        };
        let mut root = header(tar::EntryType::Directory, 0o755, epoch, 0);
        b.append_data(&mut root, "./", std::io::empty())
            .map_err(io)?;
        for (path, source) in &self.entries {
            let name = Path::new(".").join(path);
            match source {
                Source::Dir => {
                    let mut h = header(tar::EntryType::Directory, 0o755, epoch, 0);
                    b.append_data(&mut h, &name, std::io::empty()).map_err(io)?;
                }
                Source::Bytes(data) => {
                    let mut h = header(tar::EntryType::Regular, 0o644, epoch, data.len() as u64);
                    b.append_data(&mut h, &name, data.as_slice()).map_err(io)?;
                }
                Source::Disk(p) => {
                    let md = p.symlink_metadata().ctx("read", p)?;
                    let mtime = md
                        .modified()
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map_or(0, |d| d.as_secs());
                    if md.file_type().is_symlink() {
                        let target = fs::read_link(p).ctx("read", p)?;
                        let mut h = header(tar::EntryType::Symlink, 0o777, mtime, 0);
                        b.append_link(&mut h, &name, &target).map_err(io)?;
                    } else if md.is_dir() {
                        let mut h = header(tar::EntryType::Directory, 0o755, mtime, 0);
                        b.append_data(&mut h, &name, std::io::empty()).map_err(io)?;
                    } else if md.is_file() {
                        let mode = if md.permissions().mode() & 0o111 != 0 {
                            0o755
                        } else {
                            0o644
                        };
                        let mut h = header(tar::EntryType::Regular, mode, mtime, md.len());
                        let f = File::open(p).ctx("read", p)?;
                        b.append_data(&mut h, &name, f).map_err(io)?;
                    }
                }
            }
        }
        b.into_inner().map_err(io)?.flush().map_err(io)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links(pairs: &[(&str, &str)]) -> impl Fn(&Path) -> Option<PathBuf> {
        let map: BTreeMap<PathBuf, PathBuf> = pairs
            .iter()
            .map(|(a, b)| (PathBuf::from(a), PathBuf::from(b)))
            .collect();
        move |p: &Path| map.get(p).cloned()
    }

    #[test]
    fn link_resolution_follows_chains() {
        let none = links(&[]);
        assert!(resolves_inside(Path::new("a/l"), Path::new("../b"), &none));
        assert!(resolves_inside(
            Path::new("a/l"),
            Path::new("x/../../b"),
            &none
        ));
        assert!(!resolves_inside(
            Path::new("a/l"),
            Path::new("../../b"),
            &none
        ));
        assert!(!resolves_inside(Path::new("l"), Path::new("/etc"), &none));
        // Lexically inside, but b/c is itself a link to the top level: a -> b/c/../.. escapes.
        let chain = links(&[("b/c", "../d"), ("a", "b/c/../..")]);
        assert!(!resolves_inside(
            Path::new("a"),
            Path::new("b/c/../.."),
            &chain
        ));
        let lp = links(&[("x", "y"), ("y", "x")]);
        assert!(!resolves_inside(Path::new("x"), Path::new("y"), &lp));
    }

    #[test]
    fn member_paths_are_normalised_or_refused() {
        let a = Path::new("t.tar");
        assert_eq!(
            member_path(a, Path::new("./x//y")).unwrap(),
            Some(PathBuf::from("x/y"))
        );
        assert_eq!(member_path(a, Path::new("./")).unwrap(), None);
        assert!(member_path(a, Path::new("/etc/passwd")).is_err());
        assert!(member_path(a, Path::new("a/../../b")).is_err());
    }

    #[test]
    fn compression_by_name_and_magic() {
        assert_eq!(
            Compression::for_name("m-1-source-only.dkms.tar.gz"),
            Compression::Gzip
        );
        assert_eq!(Compression::for_name("x.tar.zst"), Compression::Zstd);
        assert_eq!(Compression::for_name("x.tar"), Compression::None);
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(Compression::sniff(b"BZh91AY"), Compression::Bzip2);
    }
}

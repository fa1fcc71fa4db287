//! The DKMS state tree (`/var/lib/dkms`) layout, shared by every command so that rdkms and
//! DKMS read and write the same places:
//! `<tree>/M/V/source -> <sourcetree>/M-V`, `<tree>/M/V/K/A/{module,log}`,
//! `<tree>/M/kernel-K-A -> V/K/A` (the "installed" marker).
//! The read half (`Pattern`, `Selection`, `Snapshot`) enumerates the tree exactly as DKMS's
//! status globs do, so status, autoinstall and the planner agree with DKMS on what exists.
//! Writers stage under names starting with `.` (hidden from every glob here) and rename.

use std::fs;
use std::path::{Path, PathBuf};

/// Paths inside one dkms tree.
#[derive(Debug, Clone)]
pub struct Tree {
    pub root: PathBuf,
}

impl Tree {
    pub fn new(root: impl Into<PathBuf>) -> Tree {
        Tree { root: root.into() }
    }

    /// `<tree>/M`.
    pub fn module_dir(&self, module: &str) -> PathBuf {
        self.root.join(module)
    }

    /// `<tree>/M/V`.
    pub fn version_dir(&self, module: &str, version: &str) -> PathBuf {
        self.module_dir(module).join(version)
    }

    /// `<tree>/M/V/source`, the symlink to the sources.
    pub fn source_link(&self, module: &str, version: &str) -> PathBuf {
        self.version_dir(module, version).join("source")
    }

    /// `<tree>/M/V/K/A`, one build.
    pub fn build_dir(&self, module: &str, version: &str, kernel: &str, arch: &str) -> PathBuf {
        self.version_dir(module, version).join(kernel).join(arch)
    }

    /// `<tree>/M/V/K/A/module`, the built `.ko` files.
    pub fn built_modules_dir(
        &self,
        module: &str,
        version: &str,
        kernel: &str,
        arch: &str,
    ) -> PathBuf {
        self.build_dir(module, version, kernel, arch).join("module")
    }

    /// `<tree>/M/V/K/A/log/make.log`.
    pub fn make_log(&self, module: &str, version: &str, kernel: &str, arch: &str) -> PathBuf {
        self.build_dir(module, version, kernel, arch)
            .join("log")
            .join("make.log")
    }

    /// `<tree>/M/kernel-K-A`, whose presence (pointing at `V/K/A`) marks V as installed for K/A.
    pub fn installed_link(&self, module: &str, kernel: &str, arch: &str) -> PathBuf {
        self.module_dir(module)
            .join(format!("kernel-{kernel}-{arch}"))
    }

    /// The relative target DKMS writes into the `kernel-K-A` symlink.
    pub fn installed_link_target(version: &str, kernel: &str, arch: &str) -> PathBuf {
        Path::new(version).join(kernel).join(arch)
    }
}

impl Tree {
    /// `<tree>/M/original_module/K/A`, where DKMS keeps modules it displaced (never on Debian).
    pub fn original_module_dir(&self, module: &str, kernel: &str, arch: &str) -> PathBuf {
        self.module_dir(module)
            .join("original_module")
            .join(kernel)
            .join(arch)
    }

    /// How `<tree>/M/V/source` looks. The readlink comes first: it answers for the usual
    /// symlink and for a missing entry in one syscall.
    pub fn source(&self, module: &str, version: &str) -> Source {
        let link = self.source_link(module, version);
        match fs::read_link(&link) {
            Ok(target) => Source::Link {
                target,
                resolves: link.is_dir(),
            },
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                if fs::symlink_metadata(&link).is_ok_and(|m| m.is_dir()) {
                    Source::Dir
                } else {
                    Source::Missing
                }
            }
            Err(_) => Source::Missing,
        }
    }

    /// DKMS 3.0.10's "added": `<tree>/M/V` is a directory and `source` is a symlink (even a
    /// dangling one) or a directory.
    pub fn is_added(&self, module: &str, version: &str) -> bool {
        self.version_dir(module, version).is_dir() && self.source(module, version).is_present()
    }

    /// Whether `kernel-K-A` resolves to `<tree>/M/V/K/A`. DKMS compares `readlink -f` of the
    /// link with the unresolved path; both sides are resolved here, so a `--dkmstree` given
    /// through a symlink or with `..` still finds installed modules (DKMS would say "built").
    /// The usual link, `V/K/A` as DKMS writes it, names that very path, so it only has to
    /// exist: `status` does this for every build, and resolving both paths component by
    /// component cost about 20 syscalls each time.
    pub fn is_installed_build(
        &self,
        module: &str,
        version: &str,
        kernel: &str,
        arch: &str,
    ) -> bool {
        let link = self.installed_link(module, kernel, arch);
        let Ok(target) = fs::read_link(&link) else {
            return false;
        };
        if target == Self::installed_link_target(version, kernel, arch) {
            return fs::metadata(self.build_dir(module, version, kernel, arch)).is_ok();
        }
        match (
            fs::canonicalize(&link),
            fs::canonicalize(self.build_dir(module, version, kernel, arch)),
        ) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        }
    }

    /// The file names in `<tree>/M/V/K/A/module/`, sorted; `None` when that directory is absent
    /// (DKMS: not built).
    pub fn built_module_files(
        &self,
        module: &str,
        version: &str,
        kernel: &str,
        arch: &str,
    ) -> Option<Vec<String>> {
        let dir = self.built_modules_dir(module, version, kernel, arch);
        if !dir.is_dir() {
            return None;
        }
        let mut names = entry_names(&dir);
        names.sort();
        Some(names)
    }

    /// `<tree>/M/V` pairs matching the selection, in DKMS's glob order (`<tree>/*/*`).
    pub fn module_versions(&self, module: &Pattern, version: &Pattern) -> Vec<(String, String)> {
        two_level(&self.root, module, version)
    }

    /// `K/A` pairs under `<tree>/M/V` matching the selection, in DKMS's glob order.
    pub fn kernel_arches(
        &self,
        module: &str,
        version: &str,
        kernel: &Pattern,
        arch: &Pattern,
    ) -> Vec<(String, String)> {
        two_level(&self.version_dir(module, version), kernel, arch)
    }
}

/// The `source` entry of a module version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A symlink (what `add` creates); `resolves` is false when it dangles (upstream's "broken").
    Link { target: PathBuf, resolves: bool },
    /// A real directory (binaries-only tarballs).
    Dir,
    /// No `source` entry: not added.
    Missing,
}

impl Source {
    /// Present in the sense of DKMS 3.0.10's "added" test.
    pub fn is_present(&self) -> bool {
        !matches!(self, Source::Missing)
    }

    /// Present but pointing nowhere: the sources were deleted while registered.
    pub fn is_broken(&self) -> bool {
        matches!(
            self,
            Source::Link {
                resolves: false,
                ..
            }
        )
    }
}

/// One path component of the globs DKMS's status uses (`<tree>/${1:-*}/${2:-*}` and
/// `<tree>/M/V/${3:-+([0-9]).*}/${4:-*}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// `*`: every entry whose name does not start with `.`.
    Any,
    /// `+([0-9]).*`: digits then a dot, how DKMS finds kernel dirs when no `-k` is given.
    KernelLike,
    /// A word from the command line: a shell glob (`*`, `?`, `[...]`) if it has glob
    /// characters, else the literal name (which may start with `.`).
    Word(String),
}

impl Pattern {
    /// `Word` for a non-empty word, `default` otherwise (DKMS's `${1:-*}`).
    pub fn or(word: Option<&str>, default: Pattern) -> Pattern {
        match word {
            Some(w) if !w.is_empty() => Pattern::Word(w.to_string()),
            _ => default,
        }
    }

    /// Whether `name` (one directory entry) matches.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Pattern::Any => !name.is_empty() && !name.starts_with('.'),
            Pattern::KernelLike => {
                let digits = name.bytes().take_while(u8::is_ascii_digit).count();
                digits > 0 && name.as_bytes().get(digits) == Some(&b'.')
            }
            Pattern::Word(w) if !has_glob_chars(w) => w == name,
            Pattern::Word(w) => {
                if name.starts_with('.') && !w.starts_with('.') && !w.starts_with("\\.") {
                    return false;
                }
                let p: Vec<char> = w.chars().collect();
                let s: Vec<char> = name.chars().collect();
                glob_match(&p, &s)
            }
        }
    }

    /// The literal name when no directory listing is needed.
    fn literal(&self) -> Option<&str> {
        match self {
            Pattern::Word(w) if !has_glob_chars(w) => Some(w),
            _ => None,
        }
    }
}

fn has_glob_chars(w: &str) -> bool {
    w.contains(['*', '?', '['])
}

/// Bash-style glob match of one component: `*`, `?`, `[...]` (with `!`/`^` and ranges), `\x`.
fn glob_match(p: &[char], s: &[char]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some('*') => (0..=s.len()).any(|i| glob_match(&p[1..], &s[i..])),
        Some('?') => !s.is_empty() && glob_match(&p[1..], &s[1..]),
        Some('[') => match (s.first(), bracket(&p[1..])) {
            (Some(&c), Some((set, rest))) => set.matches(c) && glob_match(rest, &s[1..]),
            (Some(&c), None) => c == '[' && glob_match(&p[1..], &s[1..]),
            (None, _) => false,
        },
        Some('\\') if p.len() > 1 => s.first() == Some(&p[1]) && glob_match(&p[2..], &s[1..]),
        Some(&c) => s.first() == Some(&c) && glob_match(&p[1..], &s[1..]),
    }
}

/// A parsed `[...]` expression.
struct Bracket {
    negated: bool,
    ranges: Vec<(char, char)>,
}

impl Bracket {
    fn matches(&self, c: char) -> bool {
        self.ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != self.negated
    }
}

/// Parses the inside of `[...]` (after the `[`); `None` if it is not closed.
fn bracket(p: &[char]) -> Option<(Bracket, &[char])> {
    let negated = matches!(p.first(), Some('!') | Some('^'));
    let mut i = usize::from(negated);
    let mut ranges = Vec::new();
    let mut first = true;
    while i < p.len() {
        let c = p[i];
        if c == ']' && !first {
            return Some((Bracket { negated, ranges }, &p[i + 1..]));
        }
        first = false;
        if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
            ranges.push((c, p[i + 2]));
            i += 3;
        } else {
            ranges.push((c, c));
            i += 1;
        }
    }
    None
}

/// Names in `dir` (non-UTF-8 names are skipped); an unreadable directory gives none, as a
/// glob would.
fn entry_names(dir: &Path) -> Vec<String> {
    list(dir)
        .unwrap_or_default()
        .into_iter()
        .map(|e| e.name)
        .collect()
}

/// One directory entry, typed from the listing itself (`d_type`), so that walking the tree
/// needs no stat per entry.
#[derive(Debug, Clone)]
struct Listed {
    name: String,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    Link,
    Other,
}

impl Listed {
    /// Whether `parent/name` is a directory: known from the listing except for symlinks.
    fn is_dir_in(&self, parent: &Path) -> bool {
        match self.kind {
            Kind::Dir => true,
            Kind::Link => parent.join(&self.name).is_dir(),
            Kind::Other => false,
        }
    }
}

/// The entries of `dir` (non-UTF-8 names skipped); `None` when it cannot be listed.
fn list(dir: &Path) -> Option<Vec<Listed>> {
    let rd = fs::read_dir(dir).ok()?;
    Some(
        rd.filter_map(|e| {
            let e = e.ok()?;
            let kind = match e.file_type() {
                Ok(t) if t.is_dir() => Kind::Dir,
                Ok(t) if t.is_symlink() => Kind::Link,
                Ok(_) => Kind::Other,
                // An unknown type: let the directory test stat it.
                Err(_) => Kind::Link,
            };
            Some(Listed {
                name: e.file_name().into_string().ok()?,
                kind,
            })
        })
        .collect(),
    )
}

/// Entries of `dir` matching `pat`; a literal is looked up without listing.
fn matching(dir: &Path, pat: &Pattern) -> Vec<Listed> {
    match pat.literal() {
        Some(lit) => match fs::symlink_metadata(dir.join(lit)) {
            Ok(m) => vec![Listed {
                name: lit.to_string(),
                kind: if m.is_dir() {
                    Kind::Dir
                } else if m.is_symlink() {
                    Kind::Link
                } else {
                    Kind::Other
                },
            }],
            Err(_) => Vec::new(),
        },
        None => list(dir)
            .unwrap_or_default()
            .into_iter()
            .filter(|e| pat.matches(&e.name))
            .collect(),
    }
}

/// Bash's order for a glob in the C locale: the bytes of the whole `a/b` path (so `a-b/1`
/// comes before `a/1`). DKMS runs with the caller's locale; rdkms always uses this byte order
/// (C and C.UTF-8 agree on it).
fn sort_pairs<T>(pairs: &mut [T], key: impl Fn(&T) -> (&str, &str)) {
    pairs.sort_by_cached_key(|p| {
        let (a, b) = key(p);
        format!("{a}/{b}").into_bytes()
    });
}

/// Expands `dir/P1/P2` in bash's glob order.
fn two_level(dir: &Path, first: &Pattern, second: &Pattern) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for a in matching(dir, first) {
        if !a.is_dir_in(dir) {
            continue;
        }
        for b in matching(&dir.join(&a.name), second) {
            out.push((a.name.clone(), b.name));
        }
    }
    sort_pairs(&mut out, |(a, b)| (a, b));
    out
}

/// Which part of the tree to read; `Selection::all()` is what DKMS sees without arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub module: Pattern,
    pub version: Pattern,
    pub kernel: Pattern,
    pub arch: Pattern,
}

impl Selection {
    /// Every module version and every kernel dir DKMS recognises (`+([0-9]).*`).
    pub fn all() -> Selection {
        Selection {
            module: Pattern::Any,
            version: Pattern::Any,
            kernel: Pattern::KernelLike,
            arch: Pattern::Any,
        }
    }
}

/// The state of the selected part of a dkms tree at one moment, for status and planners.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Added module versions, in DKMS's order.
    pub modules: Vec<ModuleVersion>,
}

/// One added `M/V`.
#[derive(Debug, Clone)]
pub struct ModuleVersion {
    pub name: String,
    pub version: String,
    pub source: Source,
    /// `<tree>/M/original_module` exists (modules DKMS displaced; never on Debian).
    pub original_modules: bool,
    /// Every selected `K/A` directory, in DKMS's order, built or not.
    pub builds: Vec<Build>,
}

/// One `<tree>/M/V/K/A` directory.
#[derive(Debug, Clone)]
pub struct Build {
    pub kernel: String,
    pub arch: String,
    /// `module/` exists (else an unfinished or foreign dir). Its files are not listed here:
    /// readers look up the names dkms.conf gives, which is cheaper than listing.
    pub built: bool,
    /// `kernel-K-A` points here.
    pub installed: bool,
}

impl Build {
    /// `module/` exists.
    pub fn is_built(&self) -> bool {
        self.built
    }
}

impl Snapshot {
    /// Reads the selected module versions and their kernel dirs. Pure reading: entries that
    /// vanish meanwhile are skipped, hidden (`.`) staging entries are never seen. Each module
    /// directory is listed once and entry types come from the listings, so a module costs a
    /// few syscalls; modules are read on several threads when there are many.
    pub fn read(tree: &Tree, sel: &Selection) -> Snapshot {
        let modules: Vec<Listed> = matching(&tree.root, &sel.module)
            .into_iter()
            .filter(|m| m.kind != Kind::Other)
            .collect();
        let mut found: Vec<ModuleVersion> =
            crate::base::par::map(&modules, 64, |_, m| read_module(tree, &m.name, sel))
                .into_iter()
                .flatten()
                .collect();
        sort_pairs(&mut found, |m| (&m.name, &m.version));
        Snapshot { modules: found }
    }
}

/// The added versions of one module directory (unsorted).
fn read_module(tree: &Tree, name: &str, sel: &Selection) -> Vec<ModuleVersion> {
    let dir = tree.module_dir(name);
    let Some(entries) = list(&dir) else {
        return Vec::new();
    };
    let has = |n: &str| entries.iter().any(|e| e.name == n);
    let original_modules = has("original_module");
    entries
        .iter()
        .filter(|v| v.kind != Kind::Other && sel.version.matches(&v.name))
        .filter_map(|v| {
            // `V/source` exists only if V is a directory, so this is DKMS's whole "added" test.
            let source = tree.source(name, &v.name);
            if !source.is_present() {
                return None;
            }
            let vdir = dir.join(&v.name);
            let mut builds: Vec<Build> = Vec::new();
            for k in matching(&vdir, &sel.kernel) {
                if !k.is_dir_in(&vdir) {
                    continue;
                }
                let kdir = vdir.join(&k.name);
                for a in matching(&kdir, &sel.arch) {
                    let link = format!("kernel-{}-{}", k.name, a.name);
                    let installed =
                        has(&link) && installed_here(tree, name, &v.name, &k.name, &a, &kdir);
                    let built = kdir.join(&a.name).join("module").is_dir();
                    builds.push(Build {
                        kernel: k.name.clone(),
                        arch: a.name,
                        built,
                        installed,
                    });
                }
            }
            sort_pairs(&mut builds, |b| (&b.kernel, &b.arch));
            Some(ModuleVersion {
                name: name.to_string(),
                version: v.name.clone(),
                source,
                original_modules,
                builds,
            })
        })
        .collect()
}

/// [`Tree::is_installed_build`] for a listed `K/A` entry whose link exists: the usual link
/// (`V/K/A`) needs only its readlink, since the entry was just listed.
fn installed_here(tree: &Tree, m: &str, v: &str, k: &str, a: &Listed, kdir: &Path) -> bool {
    match fs::read_link(tree.installed_link(m, k, &a.name)) {
        Ok(t) if t == Tree::installed_link_target(v, k, &a.name) => a.is_dir_in(kdir),
        Ok(_) => tree.is_installed_build(m, v, k, &a.name),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_dkms() {
        let t = Tree::new("/var/lib/dkms");
        assert_eq!(
            t.built_modules_dir("hello", "1.0", "6.1.0-1-amd64", "x86_64"),
            PathBuf::from("/var/lib/dkms/hello/1.0/6.1.0-1-amd64/x86_64/module")
        );
        assert_eq!(
            t.installed_link("hello", "6.1.0-1-amd64", "x86_64"),
            PathBuf::from("/var/lib/dkms/hello/kernel-6.1.0-1-amd64-x86_64")
        );
        assert_eq!(
            Tree::installed_link_target("1.0", "6.1.0-1-amd64", "x86_64"),
            PathBuf::from("1.0/6.1.0-1-amd64/x86_64")
        );
    }

    #[test]
    fn patterns_follow_bash_globs() {
        assert!(Pattern::Any.matches("foo"));
        assert!(!Pattern::Any.matches(".tmp_x86_64_abc"));
        for k in ["6.1.0-1-amd64", "10.0", "6."] {
            assert!(Pattern::KernelLike.matches(k), "{k}");
        }
        for k in ["foo-kernel", "61", ".6.1", "6a.1", ""] {
            assert!(!Pattern::KernelLike.matches(k), "{k}");
        }
        let w = |s: &str| Pattern::Word(s.to_string());
        assert!(w("v4l*").matches("v4l2loopback"));
        assert!(!w("v4l*").matches("xv4l"));
        assert!(w("6.1.0-?-amd64").matches("6.1.0-1-amd64"));
        assert!(w("[a-c]x").matches("bx") && !w("[!a-c]x").matches("bx"));
        assert!(!w("*").matches(".hidden") && w(".h*").matches(".hidden"));
        assert!(
            w(".hidden").matches(".hidden"),
            "a literal matches dot names"
        );
        assert!(w("a\\*").matches("a*") && !w("a\\*").matches("ab"));
    }

    #[test]
    fn enumeration_sorts_whole_paths_bytewise_and_skips_hidden() {
        let d = tempfile::tempdir().unwrap();
        let t = Tree::new(d.path());
        for mv in [
            "a/1",
            "a-b/1",
            "B/1",
            "b/1.9",
            "b/1.10",
            ".tmp/1",
            "c/.staging",
        ] {
            std::fs::create_dir_all(d.path().join(mv)).unwrap();
        }
        std::fs::write(d.path().join("mok.key"), "").unwrap();
        let got: Vec<String> = t
            .module_versions(&Pattern::Any, &Pattern::Any)
            .into_iter()
            .map(|(m, v)| format!("{m}/{v}"))
            .collect();
        assert_eq!(got, ["B/1", "a-b/1", "a/1", "b/1.10", "b/1.9"]);
    }

    #[test]
    fn snapshot_reads_states() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src/foo-1.0");
        std::fs::create_dir_all(&src).unwrap();
        let t = Tree::new(d.path().join("tree"));
        std::fs::create_dir_all(t.version_dir("foo", "1.0")).unwrap();
        std::os::unix::fs::symlink(&src, t.source_link("foo", "1.0")).unwrap();
        std::fs::create_dir_all(t.version_dir("gone", "2")).unwrap();
        std::os::unix::fs::symlink("/nonexistent/gone-2", t.source_link("gone", "2")).unwrap();
        std::fs::create_dir_all(t.version_dir("notadded", "3")).unwrap();
        for k in ["6.1.0-1-amd64", "6.1.0-2-amd64", "custom"] {
            let m = t.built_modules_dir("foo", "1.0", k, "x86_64");
            std::fs::create_dir_all(&m).unwrap();
            std::fs::write(m.join("foo.ko"), k).unwrap();
        }
        std::fs::create_dir_all(
            t.build_dir("foo", "1.0", "6.1.0-3-amd64", "x86_64")
                .join("log"),
        )
        .unwrap();
        std::os::unix::fs::symlink(
            Tree::installed_link_target("1.0", "6.1.0-2-amd64", "x86_64"),
            t.installed_link("foo", "6.1.0-2-amd64", "x86_64"),
        )
        .unwrap();

        let snap = Snapshot::read(&t, &Selection::all());
        let names: Vec<_> = snap.modules.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["foo", "gone"]);
        let foo = &snap.modules[0];
        assert!(!foo.source.is_broken() && snap.modules[1].source.is_broken());
        let ks: Vec<_> = foo
            .builds
            .iter()
            .map(|b| (b.kernel.as_str(), b.is_built(), b.installed))
            .collect();
        assert_eq!(
            ks,
            [
                ("6.1.0-1-amd64", true, false),
                ("6.1.0-2-amd64", true, true),
                ("6.1.0-3-amd64", false, false)
            ]
        );
        assert_eq!(
            t.built_module_files("foo", "1.0", "6.1.0-1-amd64", "x86_64"),
            Some(vec!["foo.ko".to_string()])
        );

        let custom = Selection {
            kernel: Pattern::Word("custom".into()),
            ..Selection::all()
        };
        let snap = Snapshot::read(&t, &custom);
        assert_eq!(snap.modules[0].builds.len(), 1);
        assert_eq!(snap.modules[0].builds[0].kernel, "custom");
    }
}

//! Building one module version for one kernel/arch: a private copy of the source (never the
//! shared `<tree>/M/V/build` two DKMS runs fight over), PATCH, PRE_BUILD, MAKE with DKMS's
//! rewriting, checks, strip and compression, then one atomic rename into `<tree>/M/V/K/A`.

use std::cell::RefCell;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::base::date::Utc;
use crate::base::error::{Error, IoContext, Result};
use crate::conf::DkmsConf;
use crate::effects::build_procs;
use crate::effects::build_user::BuildUser;
use crate::effects::script::{Output, Script, SCRUBBED_ENV};
use crate::effects::signing::{Signer, SigningConfig};
use crate::planning::build_order::BuildTime;
use crate::state::atomic;
use crate::state::tree::Tree;
use crate::system::console::Console;
use crate::system::kernel::{module_file_name, Compression, KernelFacts};

/// Where private build directories live, under the dkms tree (same file system, so the result
/// can be renamed into place): `<dkmstree>/.rdkms-build/<K>-<A>-<random>/`.
pub fn private_builds_dir(dkms_tree: &Path) -> PathBuf {
    dkms_tree.join(".rdkms-build")
}

/// How many parallel jobs make may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jobs {
    Limit(u32),
    Unlimited,
}

impl Jobs {
    /// `-j N` (0 = unlimited), else DKMS's `parallel_jobs` environment variable, else the CPU count.
    pub fn resolve(cli: Option<u32>) -> Jobs {
        let n = cli
            .or_else(|| std::env::var("parallel_jobs").ok()?.trim().parse().ok())
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32));
        if n == 0 {
            Jobs::Unlimited
        } else {
            Jobs::Limit(n)
        }
    }

    fn flag(self) -> String {
        match self {
            Jobs::Limit(n) => format!("-j{n}"),
            Jobs::Unlimited => "-j".to_string(),
        }
    }
}

thread_local! {
    /// The make jobserver this thread's builds share with concurrent ones (see `with_jobserver`).
    static SHARED: RefCell<Option<jobserver::Client>> = const { RefCell::new(None) };
}

/// Runs `f` with every build it starts on this thread taking its make jobs from `client`:
/// MAKE runs without `-jN` and with the jobserver in MAKEFLAGS, so concurrent builds together
/// never run more jobs than the jobserver holds tokens, and progress lines name the module.
pub fn with_jobserver<T>(client: &jobserver::Client, f: impl FnOnce() -> T) -> T {
    SHARED.with(|s| *s.borrow_mut() = Some(client.clone()));
    let out = f();
    SHARED.with(|s| *s.borrow_mut() = None);
    out
}

fn shared_jobserver() -> Option<jobserver::Client> {
    SHARED.with(|s| s.borrow().clone())
}

/// The shell command that builds, and the MAKEFLAGS to give it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MakeInvocation {
    pub command: String,
    pub makeflags: Option<String>,
}

/// DKMS's rewriting of MAKE: a command whose first word is `make` becomes
/// `make -jN KERNELRELEASE=K ...`; any other command runs unchanged but with `-jN` in MAKEFLAGS,
/// so the makes it starts still build in parallel (DKMS leaves those single-threaded).
pub fn make_invocation(make: &str, jobs: Jobs, kernel: &str) -> MakeInvocation {
    rewrite_make(make, Some(jobs.flag()), kernel)
}

/// The same rewriting for a build under a shared jobserver: no `-jN` (an explicit `-j`
/// would make the make leave the jobserver) and no MAKEFLAGS of our own (the jobserver's
/// are set on the command).
pub fn shared_make_invocation(make: &str, kernel: &str) -> MakeInvocation {
    rewrite_make(make, None, kernel)
}

fn rewrite_make(make: &str, flag: Option<String>, kernel: &str) -> MakeInvocation {
    let rest = make.strip_prefix("make");
    match rest {
        Some(rest) if rest.is_empty() || rest.starts_with(char::is_whitespace) => {
            let jobs = flag.map(|f| format!(" {f}")).unwrap_or_default();
            MakeInvocation {
                command: format!("make{jobs} KERNELRELEASE={kernel}{rest}"),
                makeflags: None,
            }
        }
        _ => MakeInvocation {
            command: make.to_string(),
            makeflags: flag,
        },
    }
}

/// Progress of a framed step (`Description... done.`). A build sharing a jobserver runs next
/// to others, so it prints whole lines prefixed with the module instead of a line it finishes
/// later.
struct Progress<'a> {
    console: &'a Console,
    /// `module/version` when builds run concurrently.
    prefix: Option<String>,
}

impl Progress<'_> {
    fn say(&self, line: &str) {
        match &self.prefix {
            None => self.console.say(line),
            // An empty line only separates steps of a lone build.
            Some(_) if line.is_empty() => {}
            Some(p) => self.console.say(format!("{p}: {}", line.trim_start())),
        }
    }

    fn begin(&self, description: &str) {
        match &self.prefix {
            None => self.console.begin(description),
            Some(p) => self.console.say(format!("{p}: {description}...")),
        }
    }

    fn done(&self, description: &str, status: i32) {
        match (&self.prefix, status) {
            (None, _) => self.console.done(Some(status)),
            (Some(p), 0) => self.console.say(format!("{p}: {description}... done.")),
            (Some(p), code) => self
                .console
                .say(format!("{p}: {description}... (bad exit status: {code})")),
        }
    }
}

/// Everything one build needs; the dkms.conf is read by `load_conf` for the private layout.
pub struct BuildInput<'a> {
    pub module: &'a str,
    pub version: &'a str,
    pub tree: &'a Tree,
    /// The module's sources (`<tree>/M/V/source` resolved).
    pub source_dir: &'a Path,
    pub facts: &'a KernelFacts,
    pub jobs: Jobs,
    pub console: &'a Console,
    /// The system root (where the kernel's `sign-file` is looked up).
    pub root: &'a Path,
    pub signing: &'a SigningConfig,
    /// Reads dkms.conf with `$dkms_tree` = the given private root and `M=` = the given build dir.
    pub load_conf: &'a dyn Fn(&Path, &Path) -> Result<DkmsConf>,
    /// Patches, build scripts and MAKE run as this user (see `build_user`); `None`: as root.
    pub build_user: Option<&'a BuildUser>,
    /// `--force`: build even when a BUILD_DEPENDS module is not installed.
    pub force: bool,
    /// The caller already resolved BUILD_DEPENDS (see `Ctx::depends_planned`).
    pub depends_planned: bool,
}

/// A private build area, removed when dropped (a kill -9 leaves it for the next command).
struct PrivateBuild {
    root: tempfile::TempDir,
    build_dir: PathBuf,
    log_path: PathBuf,
}

impl PrivateBuild {
    /// Makes `cmd` one of this build's processes: marked as such (see `build_procs`) and run as
    /// the build user when there is one.
    fn prepare(&self, cmd: &mut Command, user: Option<&BuildUser>) {
        build_procs::mark(cmd, self.root.path());
        if let Some(user) = user {
            user.apply(cmd, self.root.path());
        }
    }
}

/// Builds and stores the result in `<tree>/M/V/K/A`. On failure the make.log is kept at
/// `<tree>/M/V/build/make.log`, where DKMS users look for it.
pub fn build(input: &BuildInput<'_>) -> Result<()> {
    let f = input.facts;
    let parent = private_builds_dir(&input.tree.root);
    fs::create_dir_all(&parent).ctx("create", &parent)?;
    let _parent_guard = PrivateParent(&parent);
    let root = tempfile::Builder::new()
        .prefix(&format!("{}-{}-", f.kernel, f.arch))
        .tempdir_in(&parent)
        .ctx("create a private build directory in", &parent)?;
    let version_dir = root.path().join(input.module).join(input.version);
    let private = PrivateBuild {
        build_dir: version_dir.join("build"),
        log_path: version_dir.join("make.log"),
        root,
    };
    let conf = (input.load_conf)(private.root.path(), &private.build_dir)?;
    crate::conf::strict::check(&conf, &f.kernel, &f.arch, |l| input.console.say(l))?;
    if conf.excluded.is_some() {
        return Err(Error::BuildExclusive {
            module: format!("{}/{}", input.module, input.version),
            conf: input
                .tree
                .build_dir(input.module, input.version, &f.kernel, &f.arch)
                .join("dkms.conf"),
        });
    }
    // DKMS's test: `ls` of the sources lists fewer than two names.
    let listed = fs::read_dir(input.source_dir).map_or(0, |d| {
        d.flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .count()
    });
    if listed < 2 {
        return Err(Error::NoModuleSource {
            dir: input.tree.source_link(input.module, input.version),
        });
    }
    f.require_headers()?;
    // Once signing was announced, the build prepares it again silently.
    let announced = Console {
        quiet: true,
        ..*input.console
    };
    let signer = Signer::prepare(
        input.signing,
        input.root,
        &input.tree.root,
        f,
        if input.console.signing_shown {
            &announced
        } else {
            input.console
        },
    )?;
    if !input.console.signing_shown {
        input.console.say("");
    }
    check_build_depends(input, &conf.build_depends)?;
    fs::create_dir_all(&version_dir).ctx("create", &version_dir)?;
    std::os::unix::fs::symlink(input.source_dir, version_dir.join("source"))
        .ctx("create symlink", version_dir.join("source"))?;
    let sources = crate::state::sources::fingerprint(input.source_dir);
    copy_source(input.source_dir, &private.build_dir, input.console)?;
    if let Some(user) = input.build_user {
        user.hand_over(private.root.path())?;
    }

    let kept = input
        .tree
        .version_dir(input.module, input.version)
        .join("build");
    let failed_log = kept.join("make.log");
    let result = compile(input, &conf, &private, &failed_log, &sources)
        .and_then(|()| store(input, &conf, &private, signer.as_ref()));
    if let Err(e) = result {
        keep_failed_build(&private, &input.tree.root, &kept, input.console);
        return Err(e);
    }
    let stored_log = input
        .tree
        .make_log(input.module, input.version, &f.kernel, &f.arch);
    if conf.post_build.is_some() {
        post_build(input, &private, &stored_log)?;
    }
    remove_kept_build(&kept);
    Ok(())
}

/// DKMS 3.2.2 builds a module only when every BUILD_DEPENDS module is installed for the
/// kernel; `--force` builds anyway after a warning.
fn check_build_depends(input: &BuildInput<'_>, depends: &[String]) -> Result<()> {
    let f = input.facts;
    if input.depends_planned {
        return Ok(());
    }
    let missing: Vec<&str> = depends
        .iter()
        .filter(|d| !is_installed_anywhere(input.tree, d, &f.kernel, &f.arch))
        .map(String::as_str)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let module = format!("{}/{}", input.module, input.version);
    let missing = missing.join(" ");
    if input.force {
        input.console.warn(format!(
            "Trying to build module {module} for kernel {} ({}) despite of missing BUILD_DEPENDS: {missing}.",
            f.kernel, f.arch
        ));
        return Ok(());
    }
    Err(Error::MissingBuildDepends {
        module,
        kernel: f.kernel.clone(),
        arch: f.arch.clone(),
        missing,
    })
}

/// Whether some version of `module` is built and installed for `kernel`/`arch`.
fn is_installed_anywhere(tree: &Tree, module: &str, kernel: &str, arch: &str) -> bool {
    fs::canonicalize(tree.installed_link(module, kernel, arch))
        .is_ok_and(|build| build.join("module").is_dir())
}

/// Removes `<tree>/.rdkms-build` once empty. Concurrent builds still use it; whoever started
/// them removes it afterwards.
fn remove_private_parent(parent: &Path) {
    if shared_jobserver().is_none() {
        let _ = fs::remove_dir(parent);
    }
}

/// A successful build (or an unbuild) makes the tree kept from a failed one obsolete.
pub fn remove_kept_build(kept: &Path) {
    let _ = fs::remove_dir_all(kept);
}

/// Removes `<tree>/.rdkms-build` when the build that created it ends, however it ends.
struct PrivateParent<'a>(&'a Path);

impl Drop for PrivateParent<'_> {
    fn drop(&mut self) {
        remove_private_parent(self.0);
    }
}

/// Runs POST_BUILD where DKMS 3.2.2 runs it: the built modules are already in
/// `<tree>/M/V/K/A/module` and the build directory is `<tree>/M/V/build` (zfs's postbuild copies
/// from the one into the other), with `$dkms_tree` the real tree. The private build directory
/// is moved there for the script and the directory is removed afterwards, as DKMS does.
fn post_build(input: &BuildInput<'_>, private: &PrivateBuild, stored_log: &Path) -> Result<()> {
    // Concurrent builds of one version for several kernels take turns at `<tree>/M/V/build`.
    static SHARED_BUILD_DIR: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = SHARED_BUILD_DIR
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let f = input.facts;
    let build_dir = input
        .tree
        .version_dir(input.module, input.version)
        .join("build");
    if build_dir.symlink_metadata().is_ok() {
        fs::remove_dir_all(&build_dir).ctx("remove", &build_dir)?;
    }
    fs::rename(&private.build_dir, &build_dir).ctx("move the build directory to", &build_dir)?;
    let result = (|| {
        let conf = (input.load_conf)(&input.tree.root, &build_dir)?;
        let Some(line) = &conf.post_build else {
            return Ok(());
        };
        let log = OpenOptions::new()
            .append(true)
            .open(stored_log)
            .ctx("open", stored_log)?;
        let script = Script {
            kind: "post_build",
            line,
            dir: &build_dir,
            conf: &conf.file,
        };
        let as_user = |cmd: &mut Command| {
            if let Some(user) = input.build_user {
                user.apply(cmd, &build_dir);
            }
        };
        if let Some(code) = script.run_as(Output::Log(&log), input.console, &as_user)? {
            if code != 0 {
                input.console.warn(format!(
                    "The post_build script failed (exit {code}) for kernel {} ({}); see {}.",
                    f.kernel,
                    f.arch,
                    stored_log.display()
                ));
            }
        }
        Ok(())
    })();
    let _ = fs::remove_dir_all(&build_dir);
    result
}

/// Patches, PRE_BUILD, MAKE and the check that every module was produced, all logged; a
/// success ends the log with its build time (see `build_order`).
fn compile(
    input: &BuildInput<'_>,
    conf: &DkmsConf,
    private: &PrivateBuild,
    failed_log: &Path,
    sources: &str,
) -> Result<()> {
    let started = Instant::now();
    // CPU seconds of the logged steps; None once one could not be measured.
    let mut cpu = Some(0.0);
    let f = input.facts;
    let console = input.console;
    let shared = shared_jobserver();
    let progress = Progress {
        console,
        prefix: shared
            .as_ref()
            .map(|_| format!("{}/{}", input.module, input.version)),
    };
    let mut log = File::create(&private.log_path).ctx("create", &private.log_path)?;
    writeln!(
        log,
        "DKMS ({}) make.log for {}/{} for kernel {} ({})\n{}",
        crate::base::persona::version(),
        input.module,
        input.version,
        f.kernel,
        f.arch,
        utc_timestamp()
    )
    .ctx("write", &private.log_path)?;
    let build_dir = &private.build_dir;

    for patch in &conf.patches {
        if crate::conf::model::patch_escapes(patch) {
            return Err(Error::BadPatch {
                module: input.module.to_string(),
                patch: patch.clone(),
                problem: "contains '..' path component.".to_string(),
            });
        }
        if patch.starts_with('/') {
            return Err(Error::BadPatch {
                module: input.module.to_string(),
                patch: patch.clone(),
                problem: "is an absolute path; name a file in the patches/ directory.".to_string(),
            });
        }
        let file = build_dir.join("patches").join(patch);
        if !file.is_file() {
            return Err(Error::BadPatch {
                module: input.module.to_string(),
                patch: patch.clone(),
                // Named where the failed build is kept (DKMS's build directory).
                problem: format!(
                    "cannot be\nfound in {}/.",
                    input
                        .tree
                        .version_dir(input.module, input.version)
                        .join("build/patches")
                        .display()
                ),
            });
        }
        let description = format!("Applying patch {patch}");
        progress.begin(&description);
        let mut cmd = shell(
            &format!("patch -p1 < ./patches/{}", shell_word(patch)),
            build_dir,
        );
        private.prepare(&mut cmd, input.build_user);
        let (status, patch_cpu) = logged_step(
            &mut log,
            &description,
            &format!("patch -p1 < ./patches/{patch}"),
            cmd,
        )?;
        cpu = cpu.zip(patch_cpu).map(|(a, b)| a + b);
        progress.done(&description, status);
        if status != 0 {
            return Err(Error::PatchFailed {
                patch: patch.clone(),
                log: failed_log.to_path_buf(),
            });
        }
    }

    if let Some(line) = &conf.pre_build {
        let script = Script {
            kind: "pre_build",
            line,
            dir: build_dir,
            conf: &conf.file,
        };
        writeln!(log, "\n# pre_build: {line}").ctx("write", &private.log_path)?;
        let prepare = |cmd: &mut Command| private.prepare(cmd, input.build_user);
        if let Some(code) = script.run_as(Output::Log(&log), console, &prepare)? {
            if code != 0 {
                return Err(Error::BuildFailed {
                    kernel: f.kernel.clone(),
                    arch: f.arch.clone(),
                    code,
                    log: failed_log.to_path_buf(),
                });
            }
        }
    }

    let make = match &shared {
        Some(_) => shared_make_invocation(&conf.make, &f.kernel),
        None => make_invocation(&conf.make, input.jobs, &f.kernel),
    };
    progress.begin(BUILDING);
    let mut cmd = shell(&make.command, build_dir);
    if let Some(client) = &shared {
        client.configure_make(&mut cmd);
    }
    if let Some(flags) = &make.makeflags {
        cmd.env("MAKEFLAGS", flags);
        console.command(format!("\n(MAKEFLAGS={flags})"));
    }
    if let Some(cc) = f.make_cc() {
        cmd.env("CC", cc);
    }
    private.prepare(&mut cmd, input.build_user);
    let line = crate::system::progress::building(input.module, input.version, &f.kernel, &f.arch);
    let log_start = log.metadata().map_or(0, |m| m.len());
    let (status, make_cpu) = logged_step(&mut log, BUILDING, &make.command, cmd)?;
    drop(line);
    if console.verbose && status == 0 {
        show_since(console, &private.log_path, log_start);
    }
    cpu = cpu.zip(make_cpu).map(|(a, b)| a + b);
    progress.done(BUILDING, status);
    if status != 0 {
        progress.say("Failed command:");
        progress.say(&make.command);
        if !crate::base::persona::as_dkms() {
            show_tail(
                console,
                &private.log_path,
                failed_log,
                (private.root.path(), &input.tree.root),
            );
        }
        return Err(Error::BuildFailed {
            kernel: f.kernel.clone(),
            arch: f.arch.clone(),
            code: status,
            log: failed_log.to_path_buf(),
        });
    }

    for m in &conf.modules {
        let built = build_dir.join(format!("{}{}.ko", m.built_location, m.built_name));
        if !built.is_file() {
            return Err(Error::BuiltModuleMissing {
                module: m.built_name.clone(),
                kernel: f.kernel.clone(),
                arch: f.arch.clone(),
                path: PathBuf::from(format!("{}{}.ko", m.built_location, m.built_name)),
                log: failed_log.to_path_buf(),
            });
        }
    }
    let time = BuildTime {
        wall: started.elapsed().as_secs_f64(),
        cpu,
    };
    writeln!(
        log,
        "{}\n{}",
        crate::state::sources::trailer(sources),
        time.trailer()
    )
    .ctx("write", &private.log_path)?;
    Ok(())
}

/// `bash -c CMD` in `dir`, with DKMS's build environment.
fn shell(cmd: &str, dir: &Path) -> Command {
    let mut c = Command::new("bash");
    c.arg("-c").arg(cmd).current_dir(dir).stdin(Stdio::null());
    for var in SCRUBBED_ENV {
        c.env_remove(var);
    }
    c
}

/// Single-quotes one word for bash.
fn shell_word(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The make step's description on the console and in make.log, as DKMS 3.2.2 words it.
const BUILDING: &str = "Building module(s)";

/// Runs one framed step with its output appended to the log; returns the exit status and, when
/// it could be read, the CPU seconds of the step's whole process tree.
pub(crate) fn logged_step(
    log: &mut File,
    description: &str,
    shown: &str,
    mut cmd: Command,
) -> Result<(i32, Option<f64>)> {
    let start = Instant::now();
    writeln!(log, "\n{description}\n# command: {shown}").ctx("write", "make.log")?;
    cmd.stdout(log.try_clone().ctx("duplicate", "make.log")?);
    cmd.stderr(log.try_clone().ctx("duplicate", "make.log")?);
    let mut child = cmd.spawn().ctx("run", shown.to_string())?;
    let cpu = cpu_at_exit(child.id());
    let status = child.wait().ctx("run", shown.to_string())?;
    let code = status.code().unwrap_or(-1);
    let secs = start.elapsed().as_secs();
    writeln!(
        log,
        "\n# exit code: {code}\n# elapsed time: {:02}:{:02}:{:02}\n{}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        "-".repeat(64)
    )
    .ctx("write", "make.log")?;
    Ok((code, cpu))
}

/// Waits until child `pid` has exited, without reaping it, and reads the CPU seconds it and
/// its reaped descendants used from its zombie's `/proc/PID/stat` (per-process, so correct
/// while other threads run builds of their own). None when that cannot be read.
fn cpu_at_exit(pid: u32) -> Option<f64> {
    use nix::sys::wait::{waitid, Id, WaitPidFlag};
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).ok()?);
    loop {
        match waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return None,
            Ok(_) => break,
        }
    }
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()??;
    cpu_from_stat(&stat, ticks as f64)
}

/// utime + stime + cutime + cstime of a `/proc/PID/stat` line, in seconds.
fn cpu_from_stat(stat: &str, ticks_per_sec: f64) -> Option<f64> {
    // Fields after the parenthesised command name start at field 3 (state); 14-17 are wanted.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: Option<Vec<f64>> = fields
        .get(11..15)?
        .iter()
        .map(|f| f.parse::<f64>().ok())
        .collect();
    Some(ticks?.iter().sum::<f64>() / ticks_per_sec)
}

/// `--verbose`: make's output, which otherwise stays in the log (a failure shows its tail).
fn show_since(console: &Console, log: &Path, offset: u64) {
    let text = fs::read(log).unwrap_or_default();
    let start = usize::try_from(offset).unwrap_or(0).min(text.len());
    for l in String::from_utf8_lossy(&text[start..]).lines() {
        console.say(l);
    }
}

/// Prints the last 20 lines of the log and where the whole log is kept, with the private
/// build directory's paths shown as where the build tree is kept (`moved`: from, to).
fn show_tail(console: &Console, log: &Path, kept_at: &Path, moved: (&Path, &Path)) {
    let (from, to) = (
        format!("{}/", moved.0.display()),
        format!("{}/", moved.1.display()),
    );
    let lines: Vec<String> = File::open(log)
        .map(|f| {
            std::io::BufReader::new(f)
                .lines()
                .map_while(|l| l.ok())
                .collect()
        })
        .unwrap_or_default();
    let body: Vec<&String> = lines
        .iter()
        .filter(|l| !l.starts_with("# ") && !l.starts_with("----"))
        .collect();
    console.say(format!("Last lines of {}:", kept_at.display()));
    for l in &body[body.len().saturating_sub(20)..] {
        console.say(format!("  {}", l.replace(&from, &to)));
    }
}

/// Keeps a failed build for inspection where DKMS leaves it: the build tree moves to
/// `<tree>/M/V/build` (same file system: one rename) with its make.log, readable by everyone
/// like DKMS's; paths in the log are rewritten from the private directory to the kept one.
fn keep_failed_build(private: &PrivateBuild, tree_root: &Path, kept: &Path, console: &Console) {
    let log = fs::read(&private.log_path).unwrap_or_default();
    let from = format!("{}/", private.root.path().display());
    let to = format!("{}/", tree_root.display());
    let log = String::from_utf8_lossy(&log).replace(&from, &to);
    let _ = fs::remove_dir_all(kept);
    if let Some(dir) = kept.parent() {
        let _ = fs::create_dir_all(dir);
    }
    if fs::rename(&private.build_dir, kept).is_err() {
        let _ = fs::create_dir_all(kept);
    }
    let log_path = kept.join("make.log");
    if fs::write(&log_path, log).is_ok() {
        let _ = fs::set_permissions(&log_path, fs::Permissions::from_mode(0o644));
    }
    // DKMS leaves its build directory silently; invoked as rdkms, say where it is.
    if !crate::base::persona::as_dkms() {
        console.say(format!(
            "The failed build is kept in {} (its log: {}); the next successful build or unbuild removes it.",
            kept.display(),
            log_path.display()
        ));
    }
}

/// Copies the built modules (stripped, signed, compressed like the kernel's) and the log into a
/// staging directory next to the final place, then renames it to `<tree>/M/V/K/A`.
fn store(
    input: &BuildInput<'_>,
    conf: &DkmsConf,
    private: &PrivateBuild,
    signer: Option<&Signer>,
) -> Result<()> {
    let f = input.facts;
    let kernel_dir = input
        .tree
        .version_dir(input.module, input.version)
        .join(&f.kernel);
    fs::create_dir_all(&kernel_dir).ctx("create", &kernel_dir)?;
    // Dropping the TempDir removes the staging directory; after a rename it no longer exists.
    let staging = tempfile::Builder::new()
        .prefix(&format!(".tmp_{}_", f.arch))
        .suffix(&format!(".{}", atomic::TMP_MARK))
        .tempdir_in(&kernel_dir)
        .ctx("create a staging directory in", &kernel_dir)?;
    let module_dir = staging.path().join("module");
    let log_dir = staging.path().join("log");
    fs::create_dir(&module_dir).ctx("create", &module_dir)?;
    fs::create_dir(&log_dir).ctx("create", &log_dir)?;
    for m in &conf.modules {
        let built = private
            .build_dir
            .join(format!("{}{}.ko", m.built_location, m.built_name));
        let staged = module_dir.join(module_file_name(&m.dest_name, Compression::None));
        fs::copy(&built, &staged).ctx("copy", &built)?;
        if m.strip {
            run_quiet(Command::new("strip").arg("-g").arg(&staged), input.console);
        }
        if let Some(signer) = signer {
            // Named where DKMS signs it (its build directory), which scripts and logs expect.
            let shown = input
                .tree
                .version_dir(input.module, input.version)
                .join("build")
                .join(format!("{}{}.ko", m.built_location, m.built_name));
            signer.sign(&staged, &shown, input.console);
        }
        let staged = compress(&staged, f.compression, input.console);
        File::open(&staged)
            .and_then(|file| file.sync_all())
            .ctx("sync", &staged)?;
    }
    fs::copy(&private.log_path, log_dir.join("make.log")).ctx("copy", &private.log_path)?;
    if f.config.is_file() {
        fs::copy(&f.config, log_dir.join(".config")).ctx("copy", &f.config)?;
    }
    for d in [&module_dir, &log_dir, &staging.path().to_path_buf()] {
        atomic::sync_dir(d)?;
    }
    let dest = input
        .tree
        .build_dir(input.module, input.version, &f.kernel, &f.arch);
    atomic::replace_dir(staging.path(), &dest)
}

/// Compresses a staged module in place; on failure keeps it uncompressed, as DKMS does.
fn compress(file: &Path, compression: Compression, console: &Console) -> PathBuf {
    crate::effects::compress::compress_file(file, compression).unwrap_or_else(|e| {
        console.warn(format!(
            "cannot compress {} ({compression:?}): {e}; installing it uncompressed",
            file.display()
        ));
        file.to_path_buf()
    })
}

/// Runs a helper tool, warning (not failing) when it does not succeed.
fn run_quiet(cmd: &mut Command, console: &Console) -> bool {
    console.command(format!("{cmd:?}"));
    match cmd.stdin(Stdio::null()).output() {
        Ok(out) if out.status.success() => true,
        Ok(out) => {
            console.warn(format!(
                "{:?} failed: {}",
                cmd.get_program(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            false
        }
        Err(e) => {
            console.warn(format!("cannot run {:?}: {e}", cmd.get_program()));
            false
        }
    }
}

/// Copies a module's source tree like `cp -a` (modes and times kept), except that a symlink
/// pointing outside the tree is not copied (it could make the build read or write anywhere).
/// (`add` and `ldtarball` copy trees with other rules on purpose; see their `copy_tree`.)
pub fn copy_source(src: &Path, dst: &Path, console: &Console) -> Result<()> {
    let root = fs::canonicalize(src).ctx("resolve", src)?;
    for entry in walkdir::WalkDir::new(&root).follow_links(false) {
        let entry = entry.map_err(|e| Error::walk(&root, e))?;
        let rel = entry.path().strip_prefix(&root).unwrap_or(Path::new(""));
        let to = dst.join(rel);
        let meta = entry.path().symlink_metadata().ctx("stat", entry.path())?;
        let kind = meta.file_type();
        if kind.is_dir() {
            fs::create_dir_all(&to).ctx("create", &to)?;
            fs::set_permissions(&to, meta.permissions()).ctx("set permissions of", &to)?;
        } else if kind.is_symlink() {
            let target = fs::read_link(entry.path()).ctx("read link", entry.path())?;
            let base = entry.path().parent().unwrap_or(&root);
            if stays_inside(&root, base, &target) {
                std::os::unix::fs::symlink(&target, &to).ctx("create symlink", &to)?;
            } else {
                console.warn(format!(
                    "not copying {} -> {}: the symlink points outside the module source.",
                    entry.path().display(),
                    target.display()
                ));
            }
        } else if kind.is_file() {
            fs::copy(entry.path(), &to).ctx("copy", entry.path())?;
            if let Ok(mtime) = meta.modified() {
                let _ = File::options()
                    .write(true)
                    .open(&to)
                    .and_then(|f| f.set_modified(mtime));
            }
        }
    }
    Ok(())
}

/// Whether `target` (a link found in `base`) resolves lexically to a path under `root`.
fn stays_inside(root: &Path, base: &Path, target: &Path) -> bool {
    let joined = if target.is_absolute() {
        target.to_path_buf()
    } else {
        base.join(target)
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            std::path::Component::ParentDir => {
                if !out.pop() {
                    return false;
                }
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out.starts_with(root)
}

/// The current time in UTC, `YYYY-MM-DD HH:MM:SS UTC`, for the make.log header.
fn utc_timestamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let t = Utc::from_epoch(secs);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_make_gets_jobs_and_kernelrelease() {
        let m = make_invocation("make -C /k M=/b", Jobs::Limit(4), "6.1.0-9-amd64");
        assert_eq!(m.command, "make -j4 KERNELRELEASE=6.1.0-9-amd64 -C /k M=/b");
        assert_eq!(m.makeflags, None);
        let m = make_invocation("make", Jobs::Unlimited, "K");
        assert_eq!(m.command, "make -j KERNELRELEASE=K");
    }

    #[test]
    fn shared_jobserver_drops_the_jobs_flag() {
        let m = shared_make_invocation("make -C /k M=/b", "K");
        assert_eq!(m.command, "make KERNELRELEASE=K -C /k M=/b");
        assert_eq!(m.makeflags, None);
        let m = shared_make_invocation("./configure && make", "K");
        assert_eq!(m.command, "./configure && make");
        assert_eq!(m.makeflags, None);
    }

    #[test]
    fn other_commands_get_makeflags_instead() {
        for cmd in [
            "(make -C x)",
            "makefoo all",
            "KERNELDIR=/k make",
            "./configure && make",
        ] {
            let m = make_invocation(cmd, Jobs::Limit(2), "K");
            assert_eq!(m.command, cmd);
            assert_eq!(m.makeflags.as_deref(), Some("-j2"));
        }
    }

    #[test]
    fn symlinks_leaving_the_source_are_not_copied() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("a.c"), "int x;").unwrap();
        std::os::unix::fs::symlink("../a.c", src.join("sub/inside")).unwrap();
        std::os::unix::fs::symlink("../../etc", src.join("sub/outside")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", src.join("abs")).unwrap();
        let dst = t.path().join("dst");
        copy_source(
            &src,
            &dst,
            &Console {
                quiet: true,
                verbose: false,
                signing_shown: false,
            },
        )
        .unwrap();
        assert!(dst.join("a.c").is_file());
        assert!(dst.join("sub/inside").symlink_metadata().is_ok());
        assert!(dst.join("sub/outside").symlink_metadata().is_err());
        assert!(dst.join("abs").symlink_metadata().is_err());
    }

    #[test]
    fn cpu_time_counts_the_process_and_its_reaped_children() {
        let stat = "42 (make -C (x)) Z 1 42 42 0 -1 4194560 100 200 0 0 30 10 150 60 20 0 1 0";
        assert_eq!(cpu_from_stat(stat, 100.0), Some(2.5));
        assert_eq!(cpu_from_stat("42 (make) Z 1", 100.0), None);
    }

    #[test]
    fn a_step_reports_the_cpu_its_children_burnt() {
        let t = tempfile::tempdir().unwrap();
        let mut log = File::create(t.path().join("make.log")).unwrap();
        let burn = "(i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done); true";
        let (code, cpu) = logged_step(&mut log, "Burning", "burn", shell(burn, t.path())).unwrap();
        assert_eq!(code, 0);
        assert!(cpu.is_some_and(|c| c > 0.05), "{cpu:?}");
    }

    #[test]
    fn timestamp_has_the_expected_shape() {
        let t = utc_timestamp();
        assert_eq!(t.len(), "2026-01-01 00:00:00 UTC".len());
        assert!(t.ends_with(" UTC"));
    }
}

//! Command-line grammar: clap for the options, plus a normaliser for DKMS's free word order
//! (one action word anywhere, `module/version` or a source path as bare words).

use std::path::PathBuf;

use clap::Parser;

use crate::base::error::{Error, Result};
use crate::system::config::{absolute, Paths};
use crate::system::options::{KernelTarget, Options};

/// Every option rdkms accepts. DKMS has a flat grammar (the action is a bare word that may
/// appear anywhere), so this is one flat struct rather than clap subcommands.
#[derive(Debug, Default, Parser)]
#[command(
    name = "rdkms",
    about = "Build, install and track out-of-tree kernel modules (DKMS-compatible)",
    disable_version_flag = true,
    disable_help_flag = true,
    override_usage = "rdkms ACTION [NAME/VERSION | SOURCE-DIR | dkms.conf] [OPTIONS]"
)]
pub struct Cli {
    /// The action word, NAME/VERSION, a source directory or a dkms.conf path, in any order.
    #[arg(value_name = "WORDS")]
    pub words: Vec<String>,

    /// Module name, or NAME/VERSION.
    #[arg(short = 'm', long = "module", value_name = "NAME[/VERSION]")]
    pub module: Option<String>,

    /// Module version.
    #[arg(short = 'v', value_name = "VERSION")]
    pub version: Option<String>,

    /// Target kernel, optionally KVER/ARCH (repeatable).
    #[arg(short = 'k', long = "kernelver", value_name = "KVER[/ARCH]")]
    pub kernels: Vec<String>,

    /// Target architecture (repeatable, paired with -k by position).
    #[arg(short = 'a', long = "arch", value_name = "ARCH")]
    pub archs: Vec<String>,

    /// Act on every kernel the module is built for.
    #[arg(long)]
    pub all: bool,

    /// Redo work that is already done (rebuild, reinstall, re-add).
    #[arg(long)]
    pub force: bool,

    /// Parallel make jobs (0 = unlimited).
    #[arg(short = 'j', value_name = "N")]
    pub jobs: Option<u32>,

    /// Kernel build tree to compile against (default: <installtree>/KVER/build).
    #[arg(long = "kernelsourcedir", value_name = "DIR")]
    pub kernel_source_dir: Option<PathBuf>,

    /// DKMS state tree (default: /var/lib/dkms).
    #[arg(long = "dkmstree", value_name = "DIR")]
    pub dkms_tree: Option<PathBuf>,

    /// Module sources (default: /usr/src).
    #[arg(long = "sourcetree", value_name = "DIR")]
    pub source_tree: Option<PathBuf>,

    /// Kernel modules tree (default: /lib/modules).
    #[arg(long = "installtree", value_name = "DIR")]
    pub install_tree: Option<PathBuf>,

    /// The dkms.conf to use instead of the module's own.
    #[arg(short = 'c', value_name = "FILE")]
    pub conf: Option<PathBuf>,

    /// Kernel config file (default: <kernelsourcedir>/.config).
    #[arg(long = "config", value_name = "FILE")]
    pub kernel_config: Option<PathBuf>,

    /// Override a dkms.conf directive after it is read: NAME=VALUE (repeatable).
    #[arg(long = "directive", value_name = "NAME=VALUE")]
    pub directives: Vec<String>,

    /// Archive path for tarball actions.
    #[arg(long = "archive", value_name = "FILE")]
    pub archive: Option<PathBuf>,

    /// Template kernel for `match`.
    #[arg(long = "templatekernel", value_name = "KVER")]
    pub template_kernel: Option<String>,

    /// Skip version checks when installing.
    #[arg(long = "force-version-override")]
    pub force_version_override: bool,

    /// Do not run depmod.
    #[arg(long = "no-depmod")]
    pub no_depmod: bool,

    /// As root, evaluate and build sources even if a non-root user could have changed them.
    #[arg(long = "allow-untrusted-sources")]
    pub allow_untrusted_sources: bool,

    /// Run the compiler as this user in its private build directory (install stays root).
    #[arg(long = "build-user", value_name = "USER")]
    pub build_user: Option<String>,

    /// Directory for packages written by mkbmdeb/mkdeb (default: under the module's dkms tree).
    #[arg(long = "output", value_name = "DIR")]
    pub output: Option<PathBuf>,

    /// Tarballs: binaries only.
    #[arg(long = "binaries-only")]
    pub binaries_only: bool,

    /// Tarballs: sources only.
    #[arg(long = "source-only")]
    pub source_only: bool,

    /// Accepted for compatibility with rpm scriptlets.
    #[arg(long = "rpm_safe_upgrade", hide = true)]
    pub rpm_safe_upgrade: bool,

    /// Install symlinks instead of copies.
    #[arg(long = "symlink-modules", hide = true)]
    pub symlink_modules: bool,

    /// Load the module after installing it.
    #[arg(long = "modprobe-on-install", hide = true)]
    pub modprobe_on_install: bool,

    /// Deprecated DKMS options, accepted and ignored.
    #[arg(long = "no-initrd", hide = true)]
    pub no_initrd: bool,
    #[arg(long = "no-clean-kernel", hide = true)]
    pub no_clean_kernel: bool,
    #[arg(long = "no-prepare-kernel", hide = true)]
    pub no_prepare_kernel: bool,
    #[arg(long = "debug", hide = true)]
    pub debug: bool,

    /// Print nothing but errors.
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,

    /// Print the commands that are run.
    #[arg(long = "verbose")]
    pub verbose: bool,

    /// Print the version and exit.
    #[arg(short = 'V', long = "version")]
    pub print_version: bool,

    /// Machine-readable JSON output (status, conf show).
    #[arg(long)]
    pub json: bool,

    /// Output format for status: dkms (default) or legacy (pre-2.8 `NAME, VERSION, KVER, ARCH: state`).
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,

    /// Run as a system hook: nothing on stdout, every line also to syslog, exit status from
    /// the failure policy (rdkms_failure_policy in /etc/dkms/framework.conf).
    #[arg(long, hide = true)]
    pub hook: bool,

    /// `reconcile` from apt's DPkg::Post-Invoke: return at once when nothing changed.
    #[arg(long = "from-apt", hide = true)]
    pub from_apt: bool,

    /// Seconds a mutating command waits for another one holding the tree's lock (default 900; 30
    /// for the kernel_prerm and kernel_preinst hooks).
    #[arg(
        long = "lock-timeout",
        env = "RDKMS_LOCK_TIMEOUT",
        value_name = "SECONDS"
    )]
    pub lock_timeout: Option<u64>,

    /// Take every system path (/usr/src, /var/lib/dkms, /lib/modules, /etc/dkms, /boot, /run) under DIR.
    #[arg(long, env = "RDKMS_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,
}

/// The actions rdkms knows, as DKMS spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Add,
    Build,
    Install,
    Uninstall,
    Unbuild,
    Remove,
    Status,
    ConfShow,
    Autoinstall,
    KernelPostinst,
    KernelPrerm,
    KernelPreinst,
    Reconcile,
    Plan,
    CommonPostinst,
    Mkbmdeb,
    Mkdeb,
    Mktarball,
    Ldtarball,
    Doctor,
    GenerateMok,
    Match,
}

impl Action {
    /// The action a word names, if any.
    pub fn from_word(word: &str) -> Option<Action> {
        Some(match word {
            "add" => Action::Add,
            "build" => Action::Build,
            "install" => Action::Install,
            "uninstall" => Action::Uninstall,
            "unbuild" => Action::Unbuild,
            "remove" => Action::Remove,
            "status" => Action::Status,
            "conf" => Action::ConfShow,
            "autoinstall" => Action::Autoinstall,
            "kernel_postinst" => Action::KernelPostinst,
            "kernel_prerm" => Action::KernelPrerm,
            "kernel_preinst" => Action::KernelPreinst,
            "reconcile" => Action::Reconcile,
            "plan" => Action::Plan,
            "common_postinst" => Action::CommonPostinst,
            "mkbmdeb" => Action::Mkbmdeb,
            "mkdeb" => Action::Mkdeb,
            "mktarball" => Action::Mktarball,
            "ldtarball" => Action::Ldtarball,
            "doctor" => Action::Doctor,
            "generate_mok" => Action::GenerateMok,
            "match" => Action::Match,
            _ => return None,
        })
    }

    /// The word used on the command line.
    pub fn word(self) -> &'static str {
        match self {
            Action::Add => "add",
            Action::Build => "build",
            Action::Install => "install",
            Action::Uninstall => "uninstall",
            Action::Unbuild => "unbuild",
            Action::Remove => "remove",
            Action::Status => "status",
            Action::ConfShow => "conf show",
            Action::Autoinstall => "autoinstall",
            Action::KernelPostinst => "kernel_postinst",
            Action::KernelPrerm => "kernel_prerm",
            Action::KernelPreinst => "kernel_preinst",
            Action::Reconcile => "reconcile",
            Action::Plan => "plan",
            Action::CommonPostinst => "common_postinst",
            Action::Mkbmdeb => "mkbmdeb",
            Action::Mkdeb => "mkdeb",
            Action::Mktarball => "mktarball",
            Action::Ldtarball => "ldtarball",
            Action::Doctor => "doctor",
            Action::GenerateMok => "generate_mok",
            Action::Match => "match",
        }
    }
}

/// The layout for a command line: `--root` (or `RDKMS_ROOT`) first, then explicit tree options,
/// which are taken as given (relative to the working directory), not under the root.
/// Relative paths are made absolute first: builds run make in other directories.
pub fn paths(cli: &Cli) -> Paths {
    let root = cli
        .root
        .as_deref()
        .map_or_else(|| PathBuf::from("/"), absolute);
    let mut paths = Paths::under(root);
    if let Some(d) = &cli.dkms_tree {
        paths.dkms_tree = absolute(d);
    }
    if let Some(d) = &cli.source_tree {
        paths.source_tree = absolute(d);
    }
    if let Some(d) = &cli.install_tree {
        paths.install_tree = absolute(d);
    }
    paths
}

/// The command line after DKMS's word-order rules have been applied.
#[derive(Debug)]
pub struct Invocation {
    pub action: Option<Action>,
    pub module: Option<String>,
    pub version: Option<String>,
    /// A source directory or dkms.conf given as a bare word.
    pub source_path: Option<PathBuf>,
    /// Bare words that were neither action, module nor path (`conf show PATH` operands).
    pub operands: Vec<String>,
    pub kernels: Vec<KernelTarget>,
    pub cli: Cli,
}

impl Invocation {
    /// The typed options every layer below the command layer reads.
    pub fn options(&self) -> Options {
        let cli = &self.cli;
        Options {
            paths: paths(cli),
            module: self.module.clone(),
            version: self.version.clone(),
            source_path: self.source_path.clone(),
            kernels: self.kernels.clone(),
            archs: cli.archs.clone(),
            all: cli.all,
            force: cli.force,
            quiet: cli.quiet,
            verbose: cli.verbose,
            jobs: cli.jobs,
            lock_timeout: cli.lock_timeout,
            kernel_source_dir: cli.kernel_source_dir.clone(),
            kernel_config: cli.kernel_config.clone(),
            conf: cli.conf.clone(),
            directives: cli.directives.clone(),
            archive: cli.archive.clone(),
            output: cli.output.clone(),
            binaries_only: cli.binaries_only,
            source_only: cli.source_only,
            force_version_override: cli.force_version_override,
            no_depmod: cli.no_depmod,
            allow_untrusted_sources: cli.allow_untrusted_sources,
            build_user: cli.build_user.clone(),
        }
    }

    /// Applies DKMS's rules to the parsed words: exactly one action word; an existing path to a
    /// dkms.conf or to a directory holding one is a source; anything else sets module[/version].
    pub fn from_cli(mut cli: Cli) -> Result<Invocation> {
        let mut action = None;
        let mut source_path = None;
        let mut operands = Vec::new();
        let (mut module, mut version) = match cli.module.take() {
            Some(m) => split_module(&m),
            None => (None, None),
        };
        if cli.version.is_some() {
            version = cli.version.clone();
        }
        let words = std::mem::take(&mut cli.words);
        // The first bare word taken as a module name: a mistyped action when none is found.
        let mut first_unknown = None;
        for word in words {
            if action.is_none() && operands.is_empty() {
                if let Some(a) = Action::from_word(&word) {
                    action = Some(a);
                    continue;
                }
            } else if Action::from_word(&word).is_some() && action != Some(Action::ConfShow) {
                return Err(Error::Usage(
                    "Cannot specify more than one action.".to_string(),
                ));
            }
            if action == Some(Action::ConfShow) {
                operands.push(word);
                continue;
            }
            let path = PathBuf::from(&word);
            let is_conf = word.ends_with("dkms.conf") && path.is_file();
            let is_src = path.is_dir() && path.join("dkms.conf").is_file();
            if (is_conf || is_src) && source_path.is_none() {
                source_path = Some(path);
            } else if looks_like_path(&word) && !path.is_file() && source_path.is_none() {
                // `./mods`, `mods/`, `/opt/drv`: meant as a directory, never as NAME/VERSION;
                // the command says what is wrong with it (missing, or no dkms.conf).
                if !path.exists() {
                    return Err(Error::SourceMissing { path });
                }
                source_path = Some(path);
            } else if path.is_file() && cli.archive.is_none() {
                // Any other existing file is an archive (ldtarball), as in DKMS.
                cli.archive = Some(path);
            } else if module.is_none() {
                if action.is_none() && !word.contains('/') && !path.exists() {
                    first_unknown = Some(word.clone());
                }
                let (m, v) = split_module(&word);
                module = m;
                if v.is_some() {
                    version = v;
                }
            } else {
                operands.push(word);
            }
        }
        if let (None, Some(word)) = (action, &first_unknown) {
            return Err(Error::Usage(crate::cmd::actions::unknown_action(word)));
        }
        if action == Some(Action::ConfShow) {
            if operands.first().map(String::as_str) != Some("show") {
                return Err(Error::Usage(
                    "Usage: rdkms conf show PATH [-k KVER] [-a ARCH] [--json]".to_string(),
                ));
            }
            operands.remove(0);
        }
        let kernels = pair_kernels(&cli.kernels, &cli.archs)?;
        if cli.all && !cli.kernels.is_empty() {
            return Err(Error::Usage(
                "You cannot specify a kernel version and also specify --all on the command line."
                    .to_string(),
            ));
        }
        if cli.all && !cli.archs.is_empty() {
            return Err(Error::Usage(
                "You cannot specify an arch and also specify --all on the command line."
                    .to_string(),
            ));
        }
        Ok(Invocation {
            action,
            module,
            version,
            source_path,
            operands,
            kernels,
            cli,
        })
    }
}

/// A word written as a path: starting with `/`, `./` or `../`, or ending with `/` (a
/// NAME/VERSION never does; DKMS would misread these as module `.` or an empty version).
fn looks_like_path(word: &str) -> bool {
    word.starts_with('/')
        || word.starts_with("./")
        || word.starts_with("../")
        || word == "."
        || word == ".."
        || (word.ends_with('/') && word.len() > 1)
}

/// Splits `name/version` at the first `/`, as DKMS does.
fn split_module(word: &str) -> (Option<String>, Option<String>) {
    match word.split_once('/') {
        Some((m, v)) => (Some(m.to_string()), (!v.is_empty()).then(|| v.to_string())),
        None => (Some(word.to_string()), None),
    }
}

/// Pairs `-k` with `-a` the DKMS way: one `-a` applies to every kernel, several pair by position.
fn pair_kernels(kernels: &[String], archs: &[String]) -> Result<Vec<KernelTarget>> {
    if archs.len() > 1 && archs.len() != kernels.len() {
        return Err(Error::Usage(
            "If more than one arch is specified on the command line, then there must be an equal number of kernel versions also specified (1:1 relationship)."
                .to_string(),
        ));
    }
    kernels
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let (kernel, karch) = match k.split_once('/') {
                Some((k, a)) => (k.to_string(), Some(a.to_string())),
                None => (k.clone(), None),
            };
            let arch = karch.or_else(|| match archs.len() {
                0 => None,
                1 => Some(archs[0].clone()),
                _ => Some(archs[i].clone()),
            });
            check_word("kernel version", &kernel)?;
            if let Some(a) = &arch {
                check_word("architecture", a)?;
            }
            Ok(KernelTarget { kernel, arch })
        })
        .collect()
}

/// A kernel version or arch names a directory in several trees: it must be one plain path
/// component (not empty, `.`, `..`, no `/`, no control characters). `+` and `~` are fine
/// (`6.12.117+deb13-amd64`).
fn check_word(what: &str, word: &str) -> Result<()> {
    let bad = word.is_empty()
        || word == "."
        || word == ".."
        || word.contains('/')
        || word.chars().any(char::is_control);
    if bad {
        let example = if what == "architecture" {
            "x86_64"
        } else {
            "6.1.0-28-amd64"
        };
        return Err(Error::Usage(format!(
            "invalid {what} {word:?}: it must be one directory name such as {example} (no '/', not '..', no control characters)"
        )));
    }
    Ok(())
}

/// Shortens a clap error to its first line, with a hint.
pub fn usage_line(err: &clap::Error) -> String {
    let text = err.to_string();
    let first = text
        .lines()
        .next()
        .unwrap_or("invalid arguments")
        .trim_start_matches("error: ");
    format!("{first} (see rdkms --help)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv(args: &[&str]) -> Invocation {
        let mut argv = vec!["rdkms"];
        argv.extend_from_slice(args);
        Invocation::from_cli(Cli::try_parse_from(argv).unwrap()).unwrap()
    }

    #[test]
    fn action_anywhere_and_module_slash_version() {
        let i = inv(&["-k", "6.1.0-1-amd64", "foo/1.2", "build"]);
        assert_eq!(i.action, Some(Action::Build));
        assert_eq!(i.module.as_deref(), Some("foo"));
        assert_eq!(i.version.as_deref(), Some("1.2"));
        assert_eq!(i.kernels[0].kernel, "6.1.0-1-amd64");
    }

    #[test]
    fn dash_m_dash_v_and_equals_forms() {
        let i = inv(&[
            "install",
            "-m=foo",
            "-v",
            "2.0",
            "--kernelver=6.1/x86_64",
            "-a=arm64",
        ]);
        assert_eq!(i.module.as_deref(), Some("foo"));
        assert_eq!(i.version.as_deref(), Some("2.0"));
        assert_eq!(
            i.kernels,
            vec![KernelTarget {
                kernel: "6.1".into(),
                arch: Some("x86_64".into())
            }]
        );
        let i = inv(&["install", "--module", "foo/3"]);
        assert_eq!(i.version.as_deref(), Some("3"));
    }

    #[test]
    fn single_arch_applies_to_every_kernel() {
        let i = inv(&["build", "x/1", "-k", "a", "-k", "b", "-a", "arm64"]);
        assert!(i.kernels.iter().all(|k| k.arch.as_deref() == Some("arm64")));
    }

    #[test]
    fn two_actions_are_refused() {
        let cli = Cli::try_parse_from(["rdkms", "build", "install", "x/1"]).unwrap();
        let err = Invocation::from_cli(cli).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn kernel_with_all_is_refused() {
        let cli = Cli::try_parse_from(["rdkms", "remove", "x/1", "--all", "-k", "k"]).unwrap();
        assert!(Invocation::from_cli(cli).is_err());
    }

    #[test]
    fn mismatched_arch_count_is_refused() {
        let cli = Cli::try_parse_from([
            "rdkms", "build", "x/1", "-k", "a", "-k", "b", "-k", "c", "-a", "x", "-a", "y",
        ])
        .unwrap();
        assert!(Invocation::from_cli(cli).is_err());
    }

    #[test]
    fn conf_show_takes_operands() {
        let i = inv(&["conf", "show", "some/dir", "--json"]);
        assert_eq!(i.action, Some(Action::ConfShow));
        assert_eq!(i.operands, vec!["some/dir".to_string()]);
    }

    #[test]
    fn unknown_option_is_a_usage_error() {
        let err = Cli::try_parse_from(["rdkms", "status", "--bogus"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(!usage_line(&err).contains('\n'));
    }
}

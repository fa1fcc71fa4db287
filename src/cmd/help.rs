//! Help, man page and completions. rdkms parses DKMS's flat grammar (src/cmd/cli.rs), which clap
//! cannot describe per action; so this module builds a second, documentation-only clap tree —
//! one subcommand per action, with the options of the flat parser that apply to it — from which
//! `--help`, `rdkms help ACTION`, the man page and the shell completions are all generated.

use std::ffi::OsString;
use std::path::Path;

use clap::{Arg, ArgAction, Command, CommandFactory};
use clap_complete::engine::{ArgValueCandidates, CompletionCandidate};

use crate::cmd::cli::Cli;

/// How the actions are grouped in `rdkms --help` and the man page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Module,
    Inspection,
    Packaging,
    Hooks,
}

impl Group {
    pub const ALL: [Group; 4] = [
        Group::Module,
        Group::Inspection,
        Group::Packaging,
        Group::Hooks,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Group::Module => "Module commands",
            Group::Inspection => "Inspection",
            Group::Packaging => "Packaging",
            Group::Hooks => "Hooks (run by the kernel, apt and *-dkms packages)",
        }
    }
}

/// What the operand of an action is, for its usage line and its completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operand {
    None,
    /// NAME/VERSION or a source directory / dkms.conf.
    Module,
    /// NAME[/VERSION] pattern (status).
    Pattern,
    /// A dkms.conf or its directory (conf show).
    Conf,
    /// An archive file (ldtarball).
    Archive,
}

/// The documentation of one action.
pub struct ActionDoc {
    /// The words typed (`conf show` is two).
    pub name: &'static str,
    pub group: Group,
    pub about: &'static str,
    operand: Operand,
    /// Ids of the flat parser's options this action uses (besides the global ones).
    options: &'static [&'static str],
    pub example: &'static str,
}

/// Options every action accepts (listed once under OPTIONS in the man page).
pub const GLOBAL: &[&str] = &[
    "quiet",
    "verbose",
    "root",
    "dkms_tree",
    "source_tree",
    "install_tree",
    "lock_timeout",
];

const BUILD_OPTS: &[&str] = &[
    "module",
    "version",
    "kernels",
    "archs",
    "force",
    "jobs",
    "kernel_source_dir",
    "kernel_config",
    "conf",
    "directives",
    "allow_untrusted_sources",
    "build_user",
];

const INSTALL_OPTS: &[&str] = &[
    "module",
    "version",
    "kernels",
    "archs",
    "force",
    "force_version_override",
    "no_depmod",
    "jobs",
    "kernel_source_dir",
    "kernel_config",
    "conf",
    "directives",
    "allow_untrusted_sources",
    "build_user",
];

const REMOVE_OPTS: &[&str] = &["module", "version", "kernels", "archs", "all", "no_depmod"];

/// Every action rdkms offers, in the order help lists them.
pub const ACTIONS: &[ActionDoc] = &[
    ActionDoc {
        name: "add",
        group: Group::Module,
        about: "Register a module version (/usr/src/NAME-VERSION or a directory)",
        operand: Operand::Module,
        options: &["module", "version", "conf", "force", "kernels", "archs"],
        example: "rdkms add ./my-driver\n  rdkms add hello/1.0",
    },
    ActionDoc {
        name: "build",
        group: Group::Module,
        about: "Compile a module for kernels (adds it first if needed)",
        operand: Operand::Module,
        options: BUILD_OPTS,
        example: "rdkms build hello/1.0 -k $(uname -r)",
    },
    ActionDoc {
        name: "install",
        group: Group::Module,
        about: "Build if needed, then install into /lib/modules/KVER/updates/dkms",
        operand: Operand::Module,
        options: INSTALL_OPTS,
        example: "rdkms install hello/1.0 -k $(uname -r)",
    },
    ActionDoc {
        name: "uninstall",
        group: Group::Module,
        about: "Remove the installed files of a module; the build stays",
        operand: Operand::Module,
        options: REMOVE_OPTS,
        example: "rdkms uninstall hello/1.0 -k $(uname -r)",
    },
    ActionDoc {
        name: "unbuild",
        group: Group::Module,
        about: "Uninstall, then delete the build; the module stays added",
        operand: Operand::Module,
        options: REMOVE_OPTS,
        example: "rdkms unbuild hello/1.0 --all",
    },
    ActionDoc {
        name: "remove",
        group: Group::Module,
        about: "Uninstall and unbuild; unregister the version when no kernel is left",
        operand: Operand::Module,
        options: REMOVE_OPTS,
        example: "rdkms remove hello/1.0 --all",
    },
    ActionDoc {
        name: "status",
        group: Group::Inspection,
        about: "Every module version and its state per kernel (as dkms status)",
        operand: Operand::Pattern,
        options: &["module", "version", "kernels", "archs", "json", "format"],
        example: "rdkms status\n  rdkms status hello --json",
    },
    ActionDoc {
        name: "plan",
        group: Group::Inspection,
        about: "Show what reconcile (or autoinstall -k KVER) would do, changing nothing",
        operand: Operand::None,
        options: &["kernels", "json"],
        example: "rdkms plan\n  rdkms plan -k 6.1.0-13-amd64 --json",
    },
    ActionDoc {
        name: "conf show",
        group: Group::Inspection,
        about: "Evaluate a dkms.conf for a kernel and print its effective settings",
        operand: Operand::Conf,
        options: &["kernels", "archs", "kernel_source_dir", "json"],
        example: "rdkms conf show /usr/src/hello-1.0 -k $(uname -r)",
    },
    ActionDoc {
        name: "doctor",
        group: Group::Inspection,
        about: "Check headers, builds, installed files, signing, leftovers",
        operand: Operand::None,
        options: &["json"],
        example: "rdkms doctor\n  rdkms doctor --json",
    },
    ActionDoc {
        name: "mkbmdeb",
        group: Group::Packaging,
        about: "Package built modules as a binary .deb per kernel (NAME-modules-KVER)",
        operand: Operand::Module,
        options: &["module", "version", "kernels", "archs", "all", "output"],
        example: "rdkms mkbmdeb hello/1.0 --all --output pool/",
    },
    ActionDoc {
        name: "mkdeb",
        group: Group::Packaging,
        about: "Package a module's sources as NAME-dkms_VERSION_all.deb",
        operand: Operand::Module,
        options: &["module", "version", "output"],
        example: "rdkms mkdeb hello/1.0 --output .",
    },
    ActionDoc {
        name: "mktarball",
        group: Group::Packaging,
        about: "Write a DKMS tarball of a module's sources and/or builds",
        operand: Operand::Module,
        options: &[
            "module",
            "version",
            "kernels",
            "archs",
            "all",
            "archive",
            "binaries_only",
            "source_only",
        ],
        example: "rdkms mktarball hello/1.0 --all --archive /tmp/hello.dkms.tar.gz",
    },
    ActionDoc {
        name: "generate_mok",
        group: Group::Packaging,
        about: "Create the MOK key pair modules are signed with, if it is missing",
        operand: Operand::None,
        options: &[],
        example: "rdkms generate_mok",
    },
    ActionDoc {
        name: "match",
        group: Group::Module,
        about: "Install on a kernel the modules another kernel has installed",
        operand: Operand::Module,
        options: &["template_kernel", "kernels"],
        example: "rdkms match --templatekernel 6.1.0-12-amd64 -k 6.1.0-13-amd64",
    },
    ActionDoc {
        name: "ldtarball",
        group: Group::Packaging,
        about: "Load a DKMS tarball (sources and/or builds) into the tree",
        operand: Operand::Archive,
        options: &["archive", "force"],
        example: "rdkms ldtarball /tmp/hello.dkms.tar.gz",
    },
    ActionDoc {
        name: "autoinstall",
        group: Group::Hooks,
        about: "Build and install every AUTOINSTALL module for one kernel",
        operand: Operand::None,
        options: &["kernels", "jobs"],
        example: "rdkms autoinstall -k 6.1.0-13-amd64",
    },
    ActionDoc {
        name: "reconcile",
        group: Group::Hooks,
        about: "Bring every installed kernel to the desired state (apt runs it)",
        operand: Operand::None,
        options: &["jobs"],
        example: "rdkms reconcile",
    },
    ActionDoc {
        name: "kernel_preinst",
        group: Group::Hooks,
        about: "What /etc/kernel/preinst.d/dkms runs before a kernel is reinstalled in place",
        operand: Operand::None,
        options: &["kernels"],
        example: "rdkms kernel_preinst -k 6.1.0-13-amd64",
    },
    ActionDoc {
        name: "kernel_postinst",
        group: Group::Hooks,
        about: "What /etc/kernel/postinst.d/dkms runs after a kernel is installed",
        operand: Operand::None,
        options: &["kernels"],
        example: "rdkms kernel_postinst -k 6.1.0-13-amd64",
    },
    ActionDoc {
        name: "kernel_prerm",
        group: Group::Hooks,
        about: "What /etc/kernel/prerm.d/dkms runs before a kernel is removed",
        operand: Operand::None,
        options: &["kernels"],
        example: "rdkms kernel_prerm -k 6.1.0-13-amd64",
    },
    ActionDoc {
        name: "common_postinst",
        group: Group::Hooks,
        about: "What a *-dkms package's postinst runs (common.postinst)",
        operand: Operand::None,
        options: &["module", "version", "archive"],
        example: "rdkms common_postinst -m hello -v 1.0",
    },
];

/// The documentation of the action typed as `word` (`conf` stands for `conf show`).
pub fn action(word: &str) -> Option<&'static ActionDoc> {
    let word = if word == "conf" { "conf show" } else { word };
    ACTIONS.iter().find(|a| a.name == word)
}

/// The documentation tree: `rdkms` with one subcommand per action.
pub fn command() -> Command {
    let flat = Cli::command();
    let pick = |id: &str, heading: Option<&'static str>, order: usize| -> Arg {
        let arg = flat
            .get_arguments()
            .find(|a| a.get_id() == id)
            .cloned()
            .unwrap_or_else(|| panic!("the flat parser has no option {id}"))
            .help_heading(heading)
            .display_order(order);
        if id == "kernels" {
            arg.add(ArgValueCandidates::new(kernel_candidates))
        } else {
            arg
        }
    };
    let mut root = Command::new("rdkms")
        .about("Build, install and track out-of-tree kernel modules (DKMS-compatible)")
        .long_about(
            "rdkms builds, installs and tracks out-of-tree kernel modules. It reads the same \
             dkms.conf files and /var/lib/dkms tree as DKMS and accepts DKMS's command line: \
             the action word, NAME/VERSION and the options may come in any order.",
        )
        .override_usage("rdkms ACTION [NAME/VERSION | SOURCE-DIR | dkms.conf] [OPTIONS]")
        .disable_help_subcommand(true)
        .disable_version_flag(true)
        .help_template(
            "{about-with-newline}\n{usage-heading} {usage}\n\n{before-help}Options:\n{options}{after-help}",
        )
        .before_help(grouped_list())
        .after_help(
            "\nSee `rdkms help ACTION` (or `rdkms ACTION --help`) for an action's options, \
             and rdkms(8) for files, hooks and exit codes.",
        );
    for (i, id) in ["kernels", "archs", "force", "all", "json", "print_version"]
        .iter()
        .chain(GLOBAL)
        .enumerate()
    {
        root = root.arg(pick(id, None, i));
    }
    for doc in ACTIONS {
        let mut sub = Command::new(doc.name.split(' ').next().unwrap_or(doc.name))
            .about(doc.about)
            .override_usage(usage(doc))
            .after_help(format!("Example:\n  {}", doc.example));
        if let Some(op) = operand_arg(doc.operand) {
            sub = sub.arg(op);
        }
        for (i, id) in doc.options.iter().enumerate() {
            sub = sub.arg(pick(id, None, i));
        }
        for (i, id) in GLOBAL.iter().enumerate() {
            sub = sub.arg(pick(id, Some("Global options"), 100 + i));
        }
        if doc.name == "conf show" {
            let show = sub.clone().name("show").about(doc.about);
            sub = Command::new("conf")
                .about(doc.about)
                .override_usage(usage(doc))
                .subcommand(show);
        }
        root = root.subcommand(sub);
    }
    root = root.subcommand(
        Command::new("help")
            .about("Show the help of rdkms or of one action")
            .arg(Arg::new("action").value_name("ACTION")),
    );
    root
}

fn usage(doc: &ActionDoc) -> String {
    let operand = match doc.operand {
        Operand::None => "",
        Operand::Module => " NAME/VERSION|SOURCE-DIR",
        Operand::Pattern => " [NAME[/VERSION]]",
        Operand::Conf => " DKMS.CONF|DIR",
        Operand::Archive => " FILE",
    };
    format!("rdkms {}{operand} [OPTIONS]", doc.name)
}

fn operand_arg(op: Operand) -> Option<Arg> {
    let arg = Arg::new("operand").action(ArgAction::Set);
    Some(match op {
        Operand::None => return None,
        Operand::Module => arg
            .value_name("NAME/VERSION|SOURCE-DIR")
            .help("The module as NAME/VERSION, or its source directory (or its dkms.conf)")
            .add(ArgValueCandidates::new(module_candidates)),
        Operand::Pattern => arg
            .value_name("NAME[/VERSION]")
            .help("Only these modules (shell globs allowed)")
            .add(ArgValueCandidates::new(module_candidates)),
        Operand::Conf => arg
            .value_name("DKMS.CONF|DIR")
            .help("A dkms.conf, or the directory holding one")
            .value_hint(clap::ValueHint::AnyPath),
        Operand::Archive => arg
            .value_name("FILE")
            .help("A DKMS tarball")
            .value_hint(clap::ValueHint::FilePath),
    })
}

/// The actions grouped, one line each, for `rdkms --help`.
fn grouped_list() -> String {
    let width = ACTIONS.iter().map(|a| a.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for group in Group::ALL {
        out.push_str(group.title());
        out.push_str(":\n");
        for a in ACTIONS.iter().filter(|a| a.group == group) {
            out.push_str(&format!("  {:width$}  {}\n", a.name, a.about));
        }
        out.push('\n');
    }
    out
}

/// Handles `rdkms help [ACTION]`, `rdkms --help` and `rdkms ACTION --help` before the flat
/// parser sees the line; returns the exit status when it did.
pub fn handle(args: &[OsString]) -> Option<i32> {
    let words: Vec<&str> = args.iter().filter_map(|a| a.to_str()).collect();
    let asks_help = words.iter().any(|w| *w == "--help" || *w == "-h");
    let first_bare = words.iter().find(|w| !w.starts_with('-')).copied();
    if let Some(kind @ ("generate-man" | "generate-completions")) = first_bare {
        return Some(generate(kind, &words));
    }
    if !asks_help && first_bare != Some("help") {
        return None;
    }
    let topic = if first_bare == Some("help") {
        words.iter().filter(|w| !w.starts_with('-')).nth(1).copied()
    } else {
        words.iter().copied().find(|w| action(w).is_some())
    };
    let mut root = command();
    root.build();
    let text = match topic {
        None => root.render_long_help(),
        Some(word) => match action(word) {
            Some(doc) => {
                let name = doc.name.split(' ').next().unwrap_or(doc.name);
                let sub = root.find_subcommand_mut(name)?;
                let sub = if doc.name == "conf show" {
                    sub.find_subcommand_mut("show")?
                } else {
                    sub
                };
                sub.render_long_help()
            }
            // An action the parser knows but nobody documented yet: the overview beats
            // calling it unknown.
            None if crate::cmd::cli::Action::from_word(word).is_some() => root.render_long_help(),
            None => {
                eprintln!("Error! {}", unknown_action(word));
                return Some(2);
            }
        },
    };
    let out = std::io::stdout();
    let text = if std::io::IsTerminal::is_terminal(&out) {
        text.ansi().to_string()
    } else {
        text.to_string()
    };
    // A closed pipe (`rdkms --help | head`) is not an error worth a panic.
    let _ = std::io::Write::write_all(&mut out.lock(), text.as_bytes());
    Some(0)
}

/// The hidden package-build commands: `generate-man DIR`, `generate-completions DIR
/// [COMPLETER]` (the binary the scripts call back, default /usr/sbin/rdkms).
fn generate(kind: &str, words: &[&str]) -> i32 {
    let mut operands = words.iter().filter(|w| !w.starts_with('-')).skip(1);
    let Some(dir) = operands.next() else {
        eprintln!("Error! Usage: rdkms {kind} DIR");
        return 2;
    };
    let dir = Path::new(dir);
    let result = match kind {
        "generate-man" => crate::cmd::manpage::write_man(dir),
        _ => crate::cmd::manpage::write_completions(
            dir,
            operands.next().copied().unwrap_or("/usr/sbin/rdkms"),
        ),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("Error! {e}");
            e.exit_code()
        }
    }
}

/// DKMS's message for a word that is no action, plus a "did you mean" when rdkms was called as
/// rdkms (as `dkms` the output stays DKMS's).
pub fn unknown_action(word: &str) -> String {
    let mut msg = format!("Unknown action specified: \"{word}\"");
    if !invoked_as_dkms() {
        if let Some(best) = suggestion(word) {
            msg.push_str(&format!(" (did you mean \"{best}\"? see rdkms --help)"));
        } else {
            msg.push_str(" (see rdkms --help)");
        }
    }
    msg
}

/// Whether argv[0]'s basename is `dkms`.
pub fn invoked_as_dkms() -> bool {
    std::env::args_os()
        .next()
        .and_then(|a| Path::new(&a).file_name().map(|n| n == "dkms"))
        .unwrap_or(false)
}

/// The action closest to `word` (at most two edits, or a prefix of it).
fn suggestion(word: &str) -> Option<&'static str> {
    let word = word.to_ascii_lowercase();
    ACTIONS
        .iter()
        .map(|a| a.name.split(' ').next().unwrap_or(a.name))
        .map(|name| (edit_distance(&word, name), name))
        .filter(|(d, name)| *d <= 2 || (word.len() >= 3 && name.starts_with(&word)))
        .min_by_key(|(d, _)| *d)
        .map(|(_, name)| name)
}

/// Optimal string alignment distance (insertions, deletions, substitutions, transpositions).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

/// The root completion works on: `RDKMS_ROOT` (completion cannot see `--root` on the line).
fn completion_paths() -> crate::system::config::Paths {
    crate::system::config::Paths::under(
        std::env::var_os("RDKMS_ROOT").unwrap_or_else(|| "/".into()),
    )
}

/// Names of the subdirectories of `dir`, sorted; none when it cannot be read.
fn dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().is_dir())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Registered NAME/VERSION pairs of the dkms tree, for completing a module operand.
fn module_candidates() -> Vec<CompletionCandidate> {
    let tree = completion_paths().dkms_tree;
    let mut out = Vec::new();
    for m in dir_names(&tree) {
        for v in dir_names(&tree.join(&m)) {
            if tree
                .join(&m)
                .join(&v)
                .join("source")
                .symlink_metadata()
                .is_ok()
            {
                out.push(CompletionCandidate::new(format!("{m}/{v}")));
            }
        }
    }
    out
}

/// Kernel versions present in /lib/modules, for completing `-k`.
fn kernel_candidates() -> Vec<CompletionCandidate> {
    dir_names(&completion_paths().install_tree)
        .into_iter()
        .map(CompletionCandidate::new)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documentation_tree_is_valid_clap() {
        command().debug_assert();
    }

    #[test]
    fn every_action_the_parser_accepts_has_help() {
        // DKMS 3.2.2's action words plus rdkms's own: whichever the parser implements must be
        // documented here (add an ActionDoc when implementing one).
        let dkms = "remove install autoinstall uninstall match mktarball build unbuild add \
                    status ldtarball generate_mok kernel_preinst kernel_postinst kernel_prerm";
        let ours = "conf plan reconcile common_postinst mkbmdeb mkdeb doctor";
        for word in dkms.split_whitespace().chain(ours.split_whitespace()) {
            if crate::cmd::cli::Action::from_word(word).is_some() {
                assert!(action(word).is_some(), "{word} has no ActionDoc");
            }
        }
    }

    #[test]
    fn near_misses_get_a_suggestion() {
        assert_eq!(suggestion("isntall"), Some("install"));
        assert_eq!(suggestion("stauts"), Some("status"));
        assert_eq!(suggestion("mkbm"), Some("mkbmdeb"));
        assert_eq!(suggestion("frobnicate"), None);
    }
}

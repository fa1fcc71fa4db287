//! Help, man page and completions. rdkms parses DKMS's flat grammar (src/cmd/cli.rs), which clap
//! cannot describe per action; so this module builds a second, documentation-only clap tree —
//! one subcommand per action, with the options of the flat parser that apply to it — from which
//! `--help`, `rdkms help ACTION`, the man page and the shell completions are all generated.

use std::ffi::OsString;
use std::path::Path;

use clap::{Arg, ArgAction, Command, CommandFactory};
use clap_complete::engine::{ArgValueCandidates, CompletionCandidate};

use crate::cmd::actions::{action, ActionDoc, Operand, ACTIONS};
use crate::cmd::actions::{unknown_action, Group, GLOBAL};
use crate::cmd::cli::Cli;

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
}

//! The man page rdkms(8) and the shell completion files, generated from the documentation tree
//! of `help.rs` at package build time (`rdkms generate-man DIR`, `rdkms generate-completions
//! DIR`), so they can never disagree with the binary they ship with.

use std::fs;
use std::io::Write;
use std::path::Path;

use clap_complete::env::{Bash, EnvCompleter, Fish, Zsh};
use clap_mangen::roff::{bold, italic, roman, Roff};
use clap_mangen::Man;

use crate::base::error::{IoContext, Result};
use crate::cmd::actions::{Group, ACTIONS, GLOBAL};
use crate::cmd::help;

/// The variable the completion scripts set when they call rdkms back for candidates.
pub const COMPLETE_VAR: &str = "RDKMS_COMPLETE";

/// One block of a written section.
enum Block {
    Para(&'static str),
    Item(&'static str, &'static str),
    Code(&'static str),
}
use Block::{Code, Item, Para};

/// The sections written by hand, after the generated ones.
const SECTIONS: &[(&str, &[Block])] = &[
    (
        "FILES",
        &[
            Item("/usr/src/NAME-VERSION/", "Module sources, each with its dkms.conf."),
            Item("/var/lib/dkms/NAME/VERSION/source", "Link to the sources: the version is added."),
            Item("/var/lib/dkms/NAME/VERSION/KVER/ARCH/{module,log}", "A build: the modules and make.log."),
            Item("/var/lib/dkms/NAME/VERSION/build/", "The build tree and make.log of the last failed build, kept for inspection until the next successful build or unbuild."),
            Item("/var/lib/dkms/NAME/kernel-KVER-ARCH", "Link to the build installed for a kernel."),
            Item("/lib/modules/KVER/updates/dkms/", "Where modules are installed."),
            Item("/var/lib/dkms/mok.key, mok.pub", "The key pair modules are signed with when the kernel has sign-file."),
            Item("/var/lib/dkms/.rdkms.lock", "The tree lock every changing command takes; its holder is named when a command waits."),
            Item("/etc/dkms/framework.conf, /etc/dkms/framework.conf.d/*.conf", "Settings (see FRAMEWORK.CONF)."),
            Item("/etc/dkms/no-autoinstall", "When present, hooks build nothing."),
        ],
    ),
    (
        "EXIT STATUS",
        &[
            Para("0 on success. Other values follow DKMS:"),
            Item("1", "general failure (missing NAME/VERSION, a tool failed)"),
            Item("2", "bad command line, or no source directory"),
            Item("3", "module not added, or already added"),
            Item("4", "no dkms.conf; or a kernel_* action without exactly one -k"),
            Item("5, 6", "bad or failed patch; install failed"),
            Item("7", "a module file was not produced"),
            Item("8", "invalid dkms.conf"),
            Item("9", "a source directory without dkms.conf"),
            Item("10", "make failed"),
            Item("11", "a hook failed a boot-critical module"),
            Item("21", "kernel headers missing"),
            Item("75", "timed out waiting for the tree lock"),
            Item("77", "BUILD_EXCLUSIVE excludes this kernel"),
            Item("doctor", "0 when healthy, 1 when it found a problem (each with the command that fixes it)."),
        ],
    ),
    (
        "HOOKS",
        &[
            Para("Each hook is a short shell script that runs rdkms; they never prompt and print nothing on standard output."),
            Item("/etc/kernel/postinst.d/dkms", "rdkms kernel_postinst --hook -k KVER: builds and installs every AUTOINSTALL module for a new kernel."),
            Item("/etc/kernel/header_postinst.d/dkms", "rdkms autoinstall --hook -k KVER when headers arrive later."),
            Item("/etc/kernel/prerm.d/dkms", "rdkms kernel_prerm --hook -k KVER: unbuilds everything built for a kernel being removed."),
            Item("/etc/apt/apt.conf.d/80rdkms", "DPkg::Post-Invoke: rdkms reconcile --from-apt; returns at once when nothing relevant changed."),
            Item("/usr/lib/dkms/common.postinst", "What *-dkms packages call from their postinst."),
            Para("A module that fails never stops the others. Hooks exit 0 when only ordinary modules failed and 11 when a boot-critical (REMAKE_INITRD) module failed; see rdkms_failure_policy."),
        ],
    ),
    (
        "ENVIRONMENT",
        &[
            Item("RDKMS_ROOT", "Same as --root DIR."),
            Item("RDKMS_LOCK_TIMEOUT", "Same as --lock-timeout SECONDS (default 900; 30 for the kernel_prerm and kernel_preinst hooks)."),
            Item("RDKMS_CONF_EVAL", "bash or static: force one dkms.conf evaluator."),
            Item("RDKMS_CONF_TIMEOUT", "Seconds a bash evaluation of dkms.conf may take (default 10)."),
            Item("parallel_jobs", "Default for -j, as in DKMS."),
            Item("SOURCE_DATE_EPOCH", "Timestamps of mkbmdeb packages."),
            Item("DEBEMAIL, DEBFULLNAME", "Maintainer of mkbmdeb packages."),
        ],
    ),
    (
        "FRAMEWORK.CONF",
        &[
            Para("/etc/dkms/framework.conf and the files of /etc/dkms/framework.conf.d are read as plain name=value lines, as DKMS reads them. rdkms honours dkms_tree, source_tree, install_tree, sign_file, mok_signing_key, mok_certificate, and its own:"),
            Item("rdkms_failure_policy=never|critical|always", "When a hook exits non-zero: never, when a boot-critical module failed (default), or when any module failed."),
        ],
    ),
    (
        "EXAMPLES",
        &[
            Para("Add a driver from its source directory, build and install it for the running kernel:"),
            Code("rdkms install ./my-driver"),
            Para("Show every module and its state:"),
            Code("rdkms status"),
            Para("See what a kernel upgrade will do, then let it happen:"),
            Code("rdkms plan\nrdkms reconcile"),
            Para("Package the builds for a fleet:"),
            Code("rdkms mkbmdeb my-driver/2.3 --all --output pool/"),
            Para("Check the machine:"),
            Code("rdkms doctor"),
        ],
    ),
    (
        "DIFFERENCES FROM DKMS",
        &[
            Item("Builds", "run in a private copy of the sources and are renamed into place in one step; an interrupted command leaves the previous build intact."),
            Item("Locking", "every changing command takes one lock per tree; a second one waits, naming the holder."),
            Item("Hooks", "build the modules of one kernel concurrently under one make jobserver; apt's hook is a no-op in about a millisecond when nothing changed."),
            Item("Progress", "is shown on a terminal (module, kernel, elapsed time); make's output stays in make.log unless --verbose or a failure."),
            Item("add --force", "replaces an added version, and the next build notices changed sources."),
            Item("New actions", "plan, reconcile, doctor, conf show, mkbmdeb (as in DKMS 2), mkdeb."),
            Item("Not provided", "match, mkrpm, mkdsc, mkkmp, mkdriverdisk."),
        ],
    ),
    (
        "SEE ALSO",
        &[Para("dkms(8) is this page. make(1), modinfo(8), depmod(8), mokutil(1), update-initramfs(8).")],
    ),
];

/// The whole rdkms(8) page as roff.
pub fn render() -> Result<Vec<u8>> {
    let mut cmd = help::command();
    cmd.build();
    let mut man = Man::new(cmd)
        .section("8")
        .manual("System Administration")
        .source(format!("rdkms {}", env!("CARGO_PKG_VERSION")));
    if let Some(date) = source_date() {
        man = man.date(date);
    }
    let mut out = Vec::new();
    let io = |e| crate::Error::io("render", "rdkms.8", e);
    man.render_title(&mut out).map_err(io)?;
    man.render_name_section(&mut out).map_err(io)?;
    man.render_synopsis_section(&mut out).map_err(io)?;
    man.render_description_section(&mut out).map_err(io)?;
    out.extend(actions_section().render().as_bytes());
    man.render_options_section(&mut out).map_err(io)?;
    let mut roff = Roff::new();
    for (title, blocks) in SECTIONS {
        roff.control("SH", [*title]);
        for block in *blocks {
            match block {
                Para(text) => {
                    roff.control("PP", []).text([roman(*text)]);
                }
                Item(term, text) => {
                    roff.control("TP", [])
                        .text([bold(*term)])
                        .text([roman(*text)]);
                }
                Code(text) => {
                    roff.control("PP", [])
                        .control("RS", ["4"])
                        .control("nf", []);
                    for line in text.lines() {
                        roff.text([roman(line)]);
                    }
                    roff.control("fi", []).control("RE", []);
                }
            }
        }
    }
    out.extend(roff.render().as_bytes());
    Ok(out)
}

/// ACTIONS: each action with its usage, what it does, its options and an example, grouped.
fn actions_section() -> Roff {
    let mut cmd = help::command();
    cmd.build();
    let mut roff = Roff::new();
    roff.control("SH", ["ACTIONS"]);
    for group in Group::ALL {
        roff.control("SS", [group.title()]);
        for doc in ACTIONS.iter().filter(|a| a.group == group) {
            let name = doc.name.split(' ').next().unwrap_or(doc.name);
            let Some(sub) = cmd.find_subcommand(name) else {
                continue;
            };
            let sub = sub.find_subcommand("show").unwrap_or(sub);
            let shown = sub
                .clone()
                .render_usage()
                .to_string()
                .trim_start_matches("Usage: ")
                .to_string();
            roff.control("TP", []).text([bold(shown)]);
            roff.text([roman(doc.about), roman(".")]);
            let options: Vec<String> = sub
                .get_arguments()
                .filter(|a| !a.is_positional() && !a.is_hide_set() && a.get_id() != "help")
                .filter(|a| !GLOBAL.contains(&a.get_id().as_str()))
                .map(option_name)
                .collect();
            if !options.is_empty() {
                roff.control("br", [])
                    .text([italic("Options: "), roman(options.join(", "))]);
            }
            roff.control("br", []).text([
                italic("Example: "),
                roman(doc.example.replace("\n  ", "; ")),
            ]);
        }
    }
    roff
}

fn option_name(arg: &clap::Arg) -> String {
    let mut name = match (arg.get_short(), arg.get_long()) {
        (Some(s), Some(l)) => format!("-{s}/--{l}"),
        (Some(s), None) => format!("-{s}"),
        (None, Some(l)) => format!("--{l}"),
        (None, None) => arg.get_id().to_string(),
    };
    let value = arg.get_value_names().and_then(|v| v.first());
    if let Some(v) = value.filter(|_| arg.get_action().takes_values()) {
        name.push(' ');
        name.push_str(v);
    }
    name
}

/// `SOURCE_DATE_EPOCH` as YYYY-MM-DD, so package builds are reproducible.
fn source_date() -> Option<String> {
    let secs: i64 = std::env::var("SOURCE_DATE_EPOCH")
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let t = crate::base::date::Utc::from_epoch(secs);
    Some(format!("{:04}-{:02}-{:02}", t.year, t.month, t.day))
}

/// Writes `DIR/rdkms.8`.
pub fn write_man(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).ctx("create", dir)?;
    let path = dir.join("rdkms.8");
    fs::write(&path, render()?).ctx("write", &path)
}

/// Writes the bash, zsh and fish completion files for `rdkms` and `dkms` into DIR (named as
/// bash-completion, zsh's vendor-completions and fish's vendor_completions.d expect them).
/// Each asks the installed binary for candidates, so module names come from the tree and
/// kernel versions from /lib/modules at the time of completion.
pub fn write_completions(dir: &Path, completer: &str) -> Result<()> {
    fs::create_dir_all(dir).ctx("create", dir)?;
    for bin in ["rdkms", "dkms"] {
        let files: [(&dyn EnvCompleter, String); 3] = [
            (&Bash, bin.to_string()),
            (&Zsh, format!("_{bin}")),
            (&Fish, format!("{bin}.fish")),
        ];
        for (shell, file) in files {
            let mut text = Vec::new();
            shell
                .write_registration(COMPLETE_VAR, bin, bin, completer, &mut text)
                .ctx("render", &file)?;
            if shell.name() == "zsh" {
                // zsh autoloads the file as the function `_BIN`: complete on the first call too.
                writeln!(text, "_clap_dynamic_completer_{bin} \"$@\"").ctx("render", &file)?;
            }
            let path = dir.join(file);
            fs::write(&path, text).ctx("write", &path)?;
        }
    }
    Ok(())
}
/// Runs the hidden package-build commands (before any parsing, as `help::handle` does for
/// help); returns the exit status when `args` was one of them.
pub fn handle(args: &[std::ffi::OsString]) -> Option<i32> {
    let words: Vec<&str> = args.iter().filter_map(|a| a.to_str()).collect();
    match words.iter().find(|w| !w.starts_with('-')).copied() {
        Some(kind @ ("generate-man" | "generate-completions")) => Some(generate(kind, &words)),
        _ => None,
    }
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
        "generate-man" => write_man(dir),
        _ => write_completions(dir, operands.next().copied().unwrap_or("/usr/sbin/rdkms")),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("Error! {e}");
            e.exit_code()
        }
    }
}

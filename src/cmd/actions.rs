//! The actions rdkms offers, as documentation data: the words, their group, operand and
//! options, and the "unknown action" message with its suggestion. The parser (`cli`) and the
//! help, man page and completions (`help`, `manpage`) all read this one table.

use std::path::Path;

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
pub enum Operand {
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
    pub operand: Operand,
    /// Ids of the flat parser's options this action uses (besides the global ones).
    pub options: &'static [&'static str],
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_misses_get_a_suggestion() {
        assert_eq!(suggestion("isntall"), Some("install"));
        assert_eq!(suggestion("stauts"), Some("status"));
        assert_eq!(suggestion("mkbm"), Some("mkbmdeb"));
        assert_eq!(suggestion("frobnicate"), None);
    }
}

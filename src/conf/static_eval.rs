//! The fast evaluator: reproduces DKMS's `safe_source` for files made only of assignments, in
//! Rust, with results identical to the bash evaluator; anything else is declined, never guessed.
//!
//! Per file, as DKMS does: (1) the file runs in a copy of the current shell state, so its own
//! helper variables are visible to its later lines only; (2) every set element of a whitelisted
//! name is echoed unquoted as `NAME[i]="value"` (whitespace runs collapse to one space, each
//! word is globbed); (3) that text is evaluated again in the shell state that persists across
//! files (context variables plus whitelisted values).
//!
//! Step (2) globs in the working directory, and a word that matches nothing is left as is; so
//! a glob character is accepted only when the directory listing proves that no entry can
//! match, and declined otherwise.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::base::error::{IoContext, Result};
use crate::conf::lexer::{self, Assignment, Part, Unsupported, Value, Word};
use crate::conf::{listing, Directives, EvalContext};

/// A file the static evaluator declined, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declined {
    pub file: PathBuf,
    pub reason: Unsupported,
}

impl std::fmt::Display for Declined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.reason)
    }
}

/// Evaluates `files` in order, keeping `names`; `Ok(Err(..))` when a file is outside the subset.
pub fn evaluate(
    files: &[PathBuf],
    names: &[&str],
    ctx: &EvalContext,
) -> Result<std::result::Result<Directives, Declined>> {
    let mut texts = Vec::with_capacity(files.len());
    for f in files {
        texts.push((f.as_path(), read(f).ctx("read", f)?));
    }
    Ok(evaluate_texts(&texts, names, ctx))
}

/// A dkms.conf's bytes without the size probe `fs::read` makes: they are small, and status
/// reads one per build.
fn read(f: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::with_capacity(8 * 1024);
    std::fs::File::open(f)?
        .take(u64::MAX)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// [`evaluate`] on file contents already read (`(path, bytes)` in order).
pub fn evaluate_texts(
    files: &[(&Path, Vec<u8>)],
    names: &[&str],
    ctx: &EvalContext,
) -> std::result::Result<Directives, Declined> {
    let mut shell = Vars::default();
    let mut glob = Glob::new(&ctx.cwd);
    for (name, value) in &ctx.vars {
        shell.set(name, 0, value.clone());
    }
    for (file, bytes) in files {
        let declined = |reason| Declined {
            file: file.to_path_buf(),
            reason,
        };
        let text = std::str::from_utf8(bytes).map_err(|e| {
            declined(Unsupported {
                line: 1 + bytes[..e.valid_up_to()]
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count(),
                what: "bytes that are not UTF-8".into(),
            })
        })?;
        let assignments = lexer::parse(text).map_err(declined)?;
        let mut sub = shell.clone();
        for a in &assignments {
            sub.assign(a).map_err(declined)?;
        }
        for name in names {
            let Some(values) = sub.arrays.get(*name) else {
                continue;
            };
            for (&i, value) in values {
                echo_back(&mut shell, &mut glob, name, i, value).map_err(declined)?;
            }
        }
    }
    let mut out = Directives::default();
    for name in names {
        for (&i, value) in shell.arrays.get(*name).into_iter().flatten() {
            let mut value = value.clone();
            if value.ends_with('\r') {
                value.pop();
            }
            out.set(name, i, value);
        }
    }
    Ok(out)
}

/// Bash's variables as DKMS sees them: every variable an array (a scalar is index 0).
#[derive(Debug, Clone, Default)]
struct Vars {
    arrays: HashMap<String, BTreeMap<usize, String>>,
}

impl Vars {
    fn set(&mut self, name: &str, index: usize, value: String) {
        self.arrays
            .entry(name.to_string())
            .or_default()
            .insert(index, value);
    }

    /// `${NAME[index]}`; unset names read as empty unless bash or DKMS itself could have set them.
    fn get(&self, name: &str, index: usize, line: usize) -> std::result::Result<&str, Unsupported> {
        if let Some(values) = self.arrays.get(name) {
            return Ok(values.get(&index).map_or("", String::as_str));
        }
        if lexer::reserved(name) || name.bytes().any(|b| b.is_ascii_lowercase()) {
            return Err(Unsupported {
                line,
                what: format!("${name} is not set by the file (bash or DKMS may define it)"),
            });
        }
        Ok("")
    }

    fn assign(&mut self, a: &Assignment) -> std::result::Result<(), Unsupported> {
        match &a.value {
            Value::Scalar(w) => {
                let v = self.expand(w, a.line)?;
                self.set(&a.name, a.index.unwrap_or(0), v);
            }
            Value::List(words) => {
                let mut values = BTreeMap::new();
                for w in words {
                    if let Some(v) = self.expand_element(w, a.line)? {
                        values.insert(values.len(), v);
                    }
                }
                self.arrays.insert(a.name.clone(), values);
            }
        }
        Ok(())
    }

    /// A scalar value: expansions are neither split nor globbed.
    fn expand(&self, w: &Word, line: usize) -> std::result::Result<String, Unsupported> {
        let mut out = String::new();
        for p in &w.parts {
            match p {
                Part::Quoted(s) | Part::Bare(s) => out.push_str(s),
                Part::Var { name, index, .. } => out.push_str(self.get(name, *index, line)?),
            }
        }
        Ok(out)
    }

    /// An array element: an unquoted expansion would be split and globbed, so it is accepted
    /// only when that changes nothing; a word of nothing but empty unquoted expansions vanishes.
    fn expand_element(
        &self,
        w: &Word,
        line: usize,
    ) -> std::result::Result<Option<String>, Unsupported> {
        let mut out = String::new();
        for p in &w.parts {
            match p {
                Part::Quoted(s) | Part::Bare(s) => out.push_str(s),
                Part::Var {
                    name,
                    index,
                    quoted,
                } => {
                    let v = self.get(name, *index, line)?;
                    if !quoted && v.contains(|c| " \t\n*?[".contains(c)) {
                        return Err(Unsupported {
                            line,
                            what: format!(
                                "unquoted ${name} in an array holds blanks or glob characters"
                            ),
                        });
                    }
                    out.push_str(v);
                }
            }
        }
        Ok((w.quoted || !out.is_empty()).then_some(out))
    }
}

/// DKMS's `eval echo 'NAME[i]=\"${NAME[i]}\"'` and the re-evaluation of its output, applied to
/// `shell`. The unquoted expansion turns every run of blanks into one space and globs every
/// resulting word (the first one, `NAME[i]="…`, always holds a `[`).
fn echo_back(
    shell: &mut Vars,
    glob: &mut Glob,
    name: &str,
    index: usize,
    value: &str,
) -> std::result::Result<(), Unsupported> {
    let second_pass = |what: String| Unsupported {
        line: 1,
        what: format!("{name}[{index}] on its second evaluation: {what}"),
    };
    let mut fields = value.split([' ', '\t', '\n']).filter(|f| !f.is_empty());
    let first = match value.chars().next() {
        Some(' ' | '\t' | '\n') | None => format!("{name}[{index}]=\""),
        Some(_) => format!("{name}[{index}]=\"{}", fields.next().unwrap_or_default()),
    };
    if let Some(field) = std::iter::once(first.as_str())
        .chain(fields)
        .find(|f| glob.may_match(f))
    {
        return Err(second_pass(format!(
            "the word '{field}' could match files in {} when DKMS echoes it unquoted",
            glob.cwd.display()
        )));
    }
    let mut echoed = format!("{name}[{index}]=\"");
    let mut in_blank = false;
    for c in value.chars() {
        if matches!(c, ' ' | '\t' | '\n') {
            in_blank = true;
            continue;
        }
        if in_blank {
            echoed.push(' ');
            in_blank = false;
        }
        echoed.push(c);
    }
    if in_blank {
        echoed.push(' ');
    }
    echoed.push_str("\"\n");
    let parsed = lexer::parse(&echoed).map_err(|e| second_pass(e.what))?;
    match parsed.as_slice() {
        [a] if a.name == name && a.index == Some(index) => {
            shell.assign(a).map_err(|e| second_pass(e.what))
        }
        _ => Err(second_pass(format!(
            "{echoed:?} is not a single assignment"
        ))),
    }
}

/// Decides whether bash's pathname expansion could change a word, by listing directories.
struct Glob {
    cwd: PathBuf,
    /// Entries of `cwd`, read on first use (from the process-wide cache).
    cwd_entries: Option<std::sync::Arc<listing::Listing>>,
}

impl Glob {
    fn new(cwd: &Path) -> Glob {
        let cwd = if cwd.as_os_str().is_empty() {
            PathBuf::from("/")
        } else {
            cwd.to_path_buf()
        };
        Glob {
            cwd,
            cwd_entries: None,
        }
    }

    /// False only when `word` has no glob character or provably matches no path: the first
    /// component holding one has a literal prefix that no entry of its directory starts with.
    fn may_match(&mut self, word: &str) -> bool {
        const GLOB: [char; 3] = ['*', '?', '['];
        if !word.contains(GLOB) {
            return false;
        }
        let mut dir = if word.starts_with('/') {
            PathBuf::from("/")
        } else {
            self.cwd.clone()
        };
        for component in word.split('/').filter(|c| !c.is_empty()) {
            if let Some(end) = component.find(GLOB) {
                let prefix = &component[..end];
                if prefix.is_empty() || prefix.starts_with('.') || prefix.contains('\\') {
                    return true;
                }
                let other;
                let entries = if dir == self.cwd {
                    self.cwd_entries
                        .get_or_insert_with(|| listing::of(&self.cwd))
                } else {
                    other = listing::of(&dir);
                    &other
                };
                return match entries.as_ref() {
                    Ok(names) => names.iter().any(|n| n.starts_with(prefix)),
                    Err(std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) => false,
                    Err(_) => true,
                };
            }
            if component.contains('\\') {
                return true;
            }
            dir.push(component);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> EvalContext {
        EvalContext {
            vars: vec![
                ("kernelver".into(), "6.1.0-56-amd64".into()),
                (
                    "kernel_source_dir".into(),
                    "/lib/modules/6.1.0-56-amd64/build".into(),
                ),
            ],
            cwd: PathBuf::from("/"),
        }
    }

    const NAMES: &[&str] = &["PACKAGE_NAME", "MAKE", "CLEAN", "BUILT_MODULE_NAME"];

    fn eval(files: &[&str]) -> std::result::Result<Directives, Declined> {
        let texts: Vec<(&Path, Vec<u8>)> = files
            .iter()
            .map(|t| (Path::new("dkms.conf"), t.as_bytes().to_vec()))
            .collect();
        evaluate_texts(&texts, NAMES, &ctx())
    }

    #[test]
    fn single_quoted_value_expands_on_the_second_pass() {
        let d = eval(&["MAKE='make -C $kernel_source_dir'"]).unwrap();
        assert_eq!(
            d.scalar("MAKE"),
            "make -C /lib/modules/6.1.0-56-amd64/build"
        );
    }

    #[test]
    fn blanks_collapse_and_embedded_quotes_vanish() {
        let d = eval(&["MAKE=\"  make\t\tV=\\\"1\\\"\n \""]).unwrap();
        assert_eq!(d.scalar("MAKE"), " make V=1 ");
        assert!(
            eval(&["MAKE=\"V=\\\"1 2\\\"\""]).is_err(),
            "a blank outside the quotes"
        );
    }

    #[test]
    fn helper_variables_stay_in_their_file() {
        let d = eval(&[
            "X=a\nPACKAGE_NAME=$X\nCLEAN='$X'",
            "MAKE=\"<$X>$PACKAGE_NAME\"",
        ])
        .unwrap();
        assert_eq!(d.scalar("PACKAGE_NAME"), "a");
        assert_eq!(d.scalar("CLEAN"), "");
        assert_eq!(d.scalar("MAKE"), "<>a");
    }

    #[test]
    fn glob_characters_are_accepted_only_when_nothing_can_match() {
        let dir = tempfile::tempdir().unwrap();
        let mut ctx = ctx();
        ctx.cwd = dir.path().to_path_buf();
        let conf = b"MAKE=\"make; find . -name 'x*.ko'\"".to_vec();
        let run = |ctx: &EvalContext| {
            evaluate_texts(&[(Path::new("dkms.conf"), conf.clone())], NAMES, ctx)
        };
        assert_eq!(
            run(&ctx).unwrap().scalar("MAKE"),
            "make; find . -name 'x*.ko'"
        );
        std::fs::write(dir.path().join("'xyz.ko'"), "").unwrap();
        assert!(run(&ctx).is_err(), "'x*.ko' could match a file");
        std::fs::remove_file(dir.path().join("'xyz.ko'")).unwrap();
        std::fs::write(dir.path().join("MAKEFILE"), "").unwrap();
        assert!(run(&ctx).is_err(), "MAKE[0]=\"make; could match a file");
    }

    #[test]
    fn later_files_keep_earlier_elements() {
        let d = eval(&[
            "BUILT_MODULE_NAME[0]=a\nBUILT_MODULE_NAME[1]=b",
            "BUILT_MODULE_NAME=(c)",
        ])
        .unwrap();
        assert_eq!(d.get("BUILT_MODULE_NAME", 0), Some("c"));
        assert_eq!(d.get("BUILT_MODULE_NAME", 1), Some("b"));
    }

    #[test]
    fn arrays_and_sparse_indices() {
        let d =
            eval(&["MAKE=(a \"b c\" '' $EMPTY)\nBUILT_MODULE_NAME[3]=x\nBUILT_MODULE_NAME[7]=y"])
                .unwrap();
        assert_eq!(d.indices("MAKE"), vec![0, 1, 2]);
        assert_eq!(d.get("MAKE", 1), Some("b c"));
        assert_eq!(d.indices("BUILT_MODULE_NAME"), vec![3, 7]);
    }

    #[test]
    fn crlf_lines_lose_their_carriage_return() {
        let d = eval(&["PACKAGE_NAME=\"foo\"\r\n\r\n# c\r\nMAKE=make\r\n"]).unwrap();
        assert_eq!(d.scalar("PACKAGE_NAME"), "foo");
        assert_eq!(d.scalar("MAKE"), "make");
    }

    #[test]
    fn declines_lowercase_unknowns_and_unbalanced_second_pass() {
        assert!(eval(&["MAKE=$verbose"]).is_err());
        assert!(eval(&["MAKE='a\"b'"]).is_err());
        assert!(eval(&["MAKE='a\" X=\"b'"]).is_err());
        assert!(eval(&["MAKE=$UNSET_UPPER"]).is_ok());
    }
}

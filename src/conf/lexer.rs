//! The bash subset the static evaluator understands, parsed into assignments. Whatever falls
//! outside it (commands, control flow, substitutions, globbing, odd quoting) is reported as
//! [`Unsupported`] so the exact bash evaluator takes over; this parser never guesses.

use std::fmt;

/// Why a file is outside the static subset (the bash evaluator then reads it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    /// 1-based line in the text that was being read.
    pub line: usize,
    pub what: String,
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.what)
    }
}

/// One piece of a word, before expansion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Text from quotes or backslash escapes: taken as is, never split or globbed.
    Quoted(String),
    /// Unquoted literal text.
    Bare(String),
    /// `$NAME`, `${NAME}` or `${NAME[N]}`; `quoted` when inside double quotes.
    Var {
        name: String,
        index: usize,
        quoted: bool,
    },
}

/// A shell word: its parts and whether any quoting occurred (`""` is a word, `$EMPTY` is not).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Word {
    pub parts: Vec<Part>,
    pub quoted: bool,
}

/// The right-hand side of an assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `NAME=word` or `NAME[i]=word`: expanded without splitting or globbing.
    Scalar(Word),
    /// `NAME=(w1 w2 …)`: replaces the whole array.
    List(Vec<Word>),
}

/// `NAME=value`, `NAME[index]=value` or `NAME=(…)`, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub name: String,
    pub index: Option<usize>,
    pub value: Value,
    pub line: usize,
}

/// Where a word is read: scalar values are not split or globbed, array elements are.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ctx {
    Scalar,
    Element,
}

/// Parses `text` as a sequence of assignment-only commands, or says why it cannot.
pub fn parse(text: &str) -> Result<Vec<Assignment>, Unsupported> {
    if text.contains('\0') {
        return Err(Unsupported {
            line: 1,
            what: "NUL byte in the file".into(),
        });
    }
    let mut lx = Lexer {
        chars: text.chars().collect(),
        pos: 0,
        line: 1,
    };
    let mut out = Vec::new();
    loop {
        lx.skip_blanks();
        match lx.peek() {
            None => break,
            Some('\n') => lx.bump(),
            Some('#') => lx.skip_comment(),
            Some(_) => lx.command(&mut out)?,
        }
    }
    Ok(out)
}

/// Names bash itself sets or reacts to (and the evaluators' own `_`-prefixed names): reading
/// or assigning them depends on the shell, not on the file.
pub fn reserved(name: &str) -> bool {
    const PREFIXES: &[&str] = &["_", "BASH", "LC_", "COMP_", "HIST", "READLINE_"];
    const NAMES: &[&str] = &[
        "PWD",
        "OLDPWD",
        "HOME",
        "PATH",
        "CDPATH",
        "LANG",
        "SHELL",
        "SHELLOPTS",
        "PS0",
        "PS1",
        "PS2",
        "PS3",
        "PS4",
        "COMPREPLY",
        "UID",
        "EUID",
        "PPID",
        "HOSTNAME",
        "HOSTTYPE",
        "MACHTYPE",
        "OSTYPE",
        "RANDOM",
        "SRANDOM",
        "SECONDS",
        "LINENO",
        "SHLVL",
        "IFS",
        "OPTIND",
        "OPTARG",
        "OPTERR",
        "GROUPS",
        "FUNCNAME",
        "FUNCNEST",
        "DIRSTACK",
        "EPOCHREALTIME",
        "EPOCHSECONDS",
        "COLUMNS",
        "LINES",
        "TERM",
        "MAIL",
        "MAILCHECK",
        "MAILPATH",
        "PIPESTATUS",
        "REPLY",
        "COPROC",
        "MAPFILE",
        "GLOBIGNORE",
        "GLOBSORT",
        "FIGNORE",
        "POSIXLY_CORRECT",
        "TMOUT",
        "TIMEFORMAT",
        "PROMPT_COMMAND",
        "PROMPT_DIRTRIM",
        "ENV",
        "HOSTFILE",
        "IGNOREEOF",
        "INPUTRC",
        "INSIDE_EMACS",
        "EMACS",
        "EXECIGNORE",
        "CHILD_MAX",
        "TMPDIR",
        "USER",
        "LOGNAME",
        "auto_resume",
        "histchars",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p)) || NAMES.contains(&name)
}

struct Lexer {
    chars: Vec<char>,
    pos: usize,
    line: usize,
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

impl Lexer {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.pos + ahead).copied()
    }

    fn bump(&mut self) {
        if self.peek() == Some('\n') {
            self.line += 1;
        }
        self.pos += 1;
    }

    fn no(&self, what: impl Into<String>) -> Unsupported {
        Unsupported {
            line: self.line,
            what: what.into(),
        }
    }

    /// The line from `start` on, for messages.
    fn text_from(&self, start: usize) -> String {
        self.chars[start..]
            .iter()
            .take_while(|&&c| c != '\n')
            .collect::<String>()
            .trim_end()
            .chars()
            .take(60)
            .collect()
    }

    /// Skips spaces, tabs and backslash-newline continuations.
    fn skip_blanks(&mut self) {
        loop {
            match (self.peek(), self.peek_at(1)) {
                (Some(' ' | '\t'), _) => self.bump(),
                (Some('\\'), Some('\n')) => {
                    self.bump();
                    self.bump();
                }
                _ => return,
            }
        }
    }

    /// Skips a comment up to (not including) the newline; continuations do not extend it.
    fn skip_comment(&mut self) {
        while !matches!(self.peek(), None | Some('\n')) {
            self.bump();
        }
    }

    /// One command: one or more assignments separated by blanks, up to a newline.
    fn command(&mut self, out: &mut Vec<Assignment>) -> Result<(), Unsupported> {
        // A CRLF file's blank line is the command `$'\r'`: "command not found", no effect.
        if self.peek() == Some('\r') && matches!(self.peek_at(1), None | Some('\n')) {
            self.bump();
            return Ok(());
        }
        loop {
            out.push(self.assignment()?);
            self.skip_blanks();
            match self.peek() {
                None | Some('\n') => return Ok(()),
                Some('#') => {
                    self.skip_comment();
                    return Ok(());
                }
                Some(c @ (';' | '&' | '|' | '<' | '>' | '(' | ')')) => {
                    return Err(self.no(format!("shell operator '{c}'")))
                }
                Some(_) => {}
            }
        }
    }

    fn assignment(&mut self) -> Result<Assignment, Unsupported> {
        let line = self.line;
        let start = self.pos;
        let not_assignment = |lx: &Lexer| lx.no(format!("command '{}'", lx.text_from(start)));
        if !self.peek().is_some_and(is_name_start) {
            return Err(not_assignment(self));
        }
        while self.peek().is_some_and(is_name_char) {
            self.bump();
        }
        let name: String = self.chars[start..self.pos].iter().collect();
        let index = if self.peek() == Some('[') {
            self.bump();
            let digits_start = self.pos;
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.bump();
            }
            let digits: String = self.chars[digits_start..self.pos].iter().collect();
            if self.peek() != Some(']') || self.peek_at(1) != Some('=') {
                return Err(self.no(format!("array subscript in '{}'", self.text_from(start))));
            }
            self.bump();
            Some(literal_index(&digits).ok_or_else(|| {
                self.no(format!(
                    "array subscript '{digits}' (only plain decimal numbers are read statically)"
                ))
            })?)
        } else {
            None
        };
        if self.peek() != Some('=') {
            return Err(not_assignment(self));
        }
        self.bump();
        if reserved(&name) {
            return Err(self.no(format!("assignment to shell variable {name}")));
        }
        let value = if self.peek() == Some('(') {
            if index.is_some() {
                return Err(self.no("a list assigned to an array element"));
            }
            self.bump();
            Value::List(self.list()?)
        } else {
            Value::Scalar(self.word(Ctx::Scalar)?)
        };
        Ok(Assignment {
            name,
            index,
            value,
            line,
        })
    }

    /// The elements of `( … )`, after the opening parenthesis.
    fn list(&mut self) -> Result<Vec<Word>, Unsupported> {
        let mut words = Vec::new();
        loop {
            self.skip_blanks();
            match self.peek() {
                None => return Err(self.no("unterminated array list")),
                Some('\n') => self.bump(),
                Some('#') => self.skip_comment(),
                Some(')') => {
                    self.bump();
                    return match self.peek() {
                        None | Some(' ' | '\t' | '\n') => Ok(words),
                        Some(c) => Err(self.no(format!("'{c}' right after an array list"))),
                    };
                }
                Some(_) => words.push(self.word(Ctx::Element)?),
            }
        }
    }

    /// One word up to an unquoted blank, newline or (in a list) `)`.
    fn word(&mut self, ctx: Ctx) -> Result<Word, Unsupported> {
        let mut w = Word::default();
        // Tilde expansion applies at the start of a value and after an unquoted ':'.
        let mut tilde_position = true;
        loop {
            let Some(c) = self.peek() else {
                return Ok(w);
            };
            let mut after_colon = false;
            match c {
                ' ' | '\t' | '\n' => return Ok(w),
                ')' if ctx == Ctx::Element => return Ok(w),
                ';' | '&' | '|' | '<' | '>' | '(' | ')' => {
                    return Err(self.no(format!("shell operator '{c}'")))
                }
                '`' => return Err(self.no("command substitution with backticks")),
                '\\' => {
                    self.bump();
                    match self.peek() {
                        Some('\n') => self.bump(),
                        Some(e) => {
                            self.bump();
                            push_char(&mut w, e, true);
                            w.quoted = true;
                        }
                        None => return Err(self.no("backslash at the end of the file")),
                    }
                }
                '\'' => {
                    self.bump();
                    let mut s = String::new();
                    loop {
                        match self.peek() {
                            None => return Err(self.no("unterminated single quote")),
                            Some('\'') => break,
                            Some(q) => {
                                s.push(q);
                                self.bump();
                            }
                        }
                    }
                    self.bump();
                    push(&mut w, Part::Quoted(s));
                    w.quoted = true;
                }
                '"' => {
                    self.bump();
                    self.double_quoted(&mut w)?;
                    w.quoted = true;
                }
                '$' => {
                    self.bump();
                    let part = self.dollar(false)?;
                    push(&mut w, part);
                }
                '~' if ctx == Ctx::Element || tilde_position => {
                    return Err(self.no("tilde expansion"))
                }
                '*' | '?' | '[' if ctx == Ctx::Element => {
                    return Err(self.no(format!("unquoted glob character '{c}' in an array")))
                }
                '{' if ctx == Ctx::Element => {
                    return Err(self.no("unquoted '{' (brace expansion) in an array"))
                }
                _ => {
                    self.bump();
                    after_colon = c == ':';
                    push_char(&mut w, c, false);
                }
            }
            tilde_position = after_colon;
        }
    }

    /// The inside of `"…"`, after the opening quote.
    fn double_quoted(&mut self, w: &mut Word) -> Result<(), Unsupported> {
        // Mark the word as quoted even when the quotes are empty.
        push(w, Part::Quoted(String::new()));
        loop {
            match self.peek() {
                None => return Err(self.no("unterminated double quote")),
                Some('"') => {
                    self.bump();
                    return Ok(());
                }
                Some('`') => return Err(self.no("command substitution with backticks")),
                Some('\\') => {
                    self.bump();
                    match self.peek() {
                        None => return Err(self.no("unterminated double quote")),
                        Some('\n') => self.bump(),
                        Some(e @ ('$' | '`' | '"' | '\\')) => {
                            self.bump();
                            push_char(w, e, true);
                        }
                        Some(_) => push(w, Part::Quoted("\\".into())),
                    }
                }
                Some('$') => {
                    self.bump();
                    let part = self.dollar(true)?;
                    push(w, part);
                }
                Some(c) => {
                    self.bump();
                    push_char(w, c, true);
                }
            }
        }
    }

    /// What follows a `$`: a variable reference, or a literal `$` where bash keeps one.
    fn dollar(&mut self, quoted: bool) -> Result<Part, Unsupported> {
        let literal = || {
            if quoted {
                Part::Quoted("$".into())
            } else {
                Part::Bare("$".into())
            }
        };
        match self.peek() {
            Some(c) if is_name_start(c) => {
                let start = self.pos;
                while self.peek().is_some_and(is_name_char) {
                    self.bump();
                }
                let name = self.chars[start..self.pos].iter().collect();
                Ok(Part::Var {
                    name,
                    index: 0,
                    quoted,
                })
            }
            Some('{') => {
                self.bump();
                let start = self.pos;
                while !matches!(self.peek(), None | Some('}' | '\n')) {
                    self.bump();
                }
                let inner: String = self.chars[start..self.pos].iter().collect();
                if self.peek() != Some('}') {
                    return Err(self.no(format!("unterminated '${{{inner}'")));
                }
                self.bump();
                let (name, index) = braced_reference(&inner).ok_or_else(|| {
                    self.no(format!(
                        "parameter expansion '${{{inner}}}' beyond a plain variable"
                    ))
                })?;
                Ok(Part::Var {
                    name,
                    index,
                    quoted,
                })
            }
            None
            | Some(' ' | '\t' | '\n' | '/' | '.' | ':' | ',' | '=' | '+' | '%' | '^' | ']' | '}') => {
                Ok(literal())
            }
            // Inside double quotes these end the quoting or escape: the `$` stays literal.
            Some('"' | '\'' | '\\') if quoted => Ok(literal()),
            Some('(') => Err(self.no("command substitution or arithmetic '$('")),
            Some(c) => Err(self.no(format!("special expansion '${c}'"))),
        }
    }
}

/// Appends a part, merging it into the previous one when both are literal text of one kind.
fn push(w: &mut Word, part: Part) {
    match (w.parts.last_mut(), part) {
        (Some(Part::Quoted(a)), Part::Quoted(b)) | (Some(Part::Bare(a)), Part::Bare(b)) => {
            a.push_str(&b)
        }
        (_, part) => w.parts.push(part),
    }
}

/// Appends one character of literal text, without a string of its own when it extends the
/// previous part (most characters of a dkms.conf go through here).
fn push_char(w: &mut Word, c: char, quoted: bool) {
    match (w.parts.last_mut(), quoted) {
        (Some(Part::Quoted(a)), true) | (Some(Part::Bare(a)), false) => a.push(c),
        (_, true) => w.parts.push(Part::Quoted(c.to_string())),
        (_, false) => w.parts.push(Part::Bare(c.to_string())),
    }
}

/// `NAME` or `NAME[N]` inside `${…}`.
fn braced_reference(inner: &str) -> Option<(String, usize)> {
    let (name, index) = match inner.split_once('[') {
        Some((name, rest)) => (name, literal_index(rest.strip_suffix(']')?)?),
        None => (inner, 0),
    };
    let mut chars = name.chars();
    (chars.next().is_some_and(is_name_start) && chars.all(is_name_char))
        .then(|| (name.to_string(), index))
}

/// A subscript bash reads as the same decimal number: no sign, no leading zero (octal), and
/// small enough that every evaluator agrees on it.
fn literal_index(digits: &str) -> Option<usize> {
    let ok = !digits.is_empty()
        && digits.len() <= 9
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    ok.then(|| digits.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(text: &str) -> Vec<Part> {
        let a = parse(text).unwrap();
        assert_eq!(a.len(), 1, "{text}");
        match &a[0].value {
            Value::Scalar(w) => w.parts.clone(),
            Value::List(_) => panic!("list"),
        }
    }

    #[test]
    fn quoting_forms() {
        assert_eq!(
            scalar("A=a'b c'\\ d"),
            vec![
                Part::Bare("a".into()),
                Part::Quoted("b c ".into()),
                Part::Bare("d".into())
            ]
        );
        assert_eq!(scalar(r#"A="x\$y\q""#), vec![Part::Quoted("x$y\\q".into())]);
        assert_eq!(scalar("A=x\\\ny"), vec![Part::Bare("xy".into())]);
    }

    #[test]
    fn references() {
        assert_eq!(
            scalar("A=${B[3]}$C"),
            vec![
                Part::Var {
                    name: "B".into(),
                    index: 3,
                    quoted: false
                },
                Part::Var {
                    name: "C".into(),
                    index: 0,
                    quoted: false
                }
            ]
        );
        assert_eq!(scalar("A=$/x"), vec![Part::Bare("$/x".into())]);
        assert_eq!(scalar(r#"A="^6$" "#), vec![Part::Quoted("^6$".into())]);
    }

    #[test]
    fn assignments_commands_and_comments() {
        let a = parse("# c\nA=1 B[2]=x # tail\n\r\nC=(a \"b c\"\n # inner\n d)\n").unwrap();
        let names: Vec<_> = a
            .iter()
            .map(|a| (a.name.as_str(), a.index, a.line))
            .collect();
        assert_eq!(
            names,
            vec![("A", None, 2), ("B", Some(2), 2), ("C", None, 4)]
        );
        match &a[2].value {
            Value::List(w) => assert_eq!(w.len(), 3),
            Value::Scalar(_) => panic!("scalar"),
        }
    }

    #[test]
    fn refuses_what_it_does_not_understand() {
        for text in [
            "make",
            "A=1; B=2",
            "A=1 && B=2",
            "A=$(date)",
            "A=`date`",
            "A=${B:-x}",
            "A=${#B}",
            "A=$'x'",
            "A=$1",
            "A=$$",
            "export A=1",
            "A+=x",
            "A[i]=1",
            "A[010]=1",
            "A=(*.c)",
            "A=(x{1,2})",
            "A=~/x",
            "A=x:~",
            "A=(~)",
            "if true; then A=1; fi",
            "A=\"x",
            "A='x",
            "IFS=:",
            "A=1 cmd",
            "f() { :; }",
            "A=(x)y",
            "A=x\\",
            "A=$((1+1))",
            "PATH=/x",
            "A=$\"x\"",
            "A=1 \r",
        ] {
            assert!(parse(text).is_err(), "accepted {text:?}");
        }
    }

    #[test]
    fn tilde_inside_a_value_is_literal() {
        assert_eq!(scalar("V=0~1"), vec![Part::Bare("0~1".into())]);
    }
}

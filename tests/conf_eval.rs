//! Quoting and expansion: a table of cases with the values DKMS ends up with, checked on both
//! evaluators, and random words where the static evaluator must agree with bash whenever it
//! accepts the file.

mod conf_support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use conf_support::{context, real_kernel, write};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use rdkms::conf::{bash, static_eval, Directives, EvalContext, DKMS_CONF_NAMES};

/// A source directory named like /usr/src/NAME-VERSION, so `$module`/`$module_version` are set.
fn source_dir(tmp: &Path) -> PathBuf {
    let dir = tmp.join("hello-1.0");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn ctx(conf: &Path) -> EvalContext {
    let kernel = real_kernel();
    let ksrc = PathBuf::from(format!("/lib/modules/{kernel}/build"));
    context(conf, &kernel, &ksrc)
}

/// The directives of a table row; `@K@` stands for the kernel the confs are read for.
fn expected(elements: &[(&str, usize, &str)]) -> Directives {
    let mut d = Directives::default();
    for (name, i, v) in elements {
        d.set(name, *i, v.replace("@K@", &real_kernel()));
    }
    d
}

/// Evaluates `text` with both evaluators; `None` from static means it declined.
fn both(text: &str) -> (Option<Directives>, Directives) {
    let tmp = tempfile::tempdir().unwrap();
    let conf = write(&source_dir(tmp.path()), "dkms.conf", text);
    let ctx = ctx(&conf);
    let files = [conf];
    let by_bash = bash::evaluate(&files, DKMS_CONF_NAMES, &ctx)
        .unwrap_or_else(|e| panic!("bash on {text:?}: {e}"));
    let by_static = static_eval::evaluate(&files, DKMS_CONF_NAMES, &ctx)
        .unwrap()
        .ok();
    (by_static, by_bash)
}

type Row = (
    &'static str,
    Option<&'static [(&'static str, usize, &'static str)]>,
);

/// Conf text, and what DKMS holds afterwards (`None`: the static evaluator must decline).
const TABLE: &[Row] = &[
    (
        "MAKE='make -C $kernel_source_dir'",
        Some(&[("MAKE", 0, "make -C /lib/modules/@K@/build")]),
    ),
    ("MAKE=\"a  \t b\"", Some(&[("MAKE", 0, "a b")])),
    (
        "MAKE=\"  lead and trail  \"",
        Some(&[("MAKE", 0, " lead and trail ")]),
    ),
    (
        "MAKE=\"line1\n\n   line2\"",
        Some(&[("MAKE", 0, "line1 line2")]),
    ),
    ("MAKE='a\\tb'", Some(&[("MAKE", 0, "a\\tb")])),
    ("MAKE=a\\ b", Some(&[("MAKE", 0, "a b")])),
    ("MAKE=\"x\\\"y\\\"z\"", Some(&[("MAKE", 0, "xyz")])),
    ("MAKE='\\$kernelver'", Some(&[("MAKE", 0, "$kernelver")])),
    ("MAKE='\\\\'", Some(&[("MAKE", 0, "\\")])),
    ("MAKE=\"\"", Some(&[("MAKE", 0, "")])),
    ("MAKE=", Some(&[("MAKE", 0, "")])),
    (
        "MAKE=$module-$module_version",
        Some(&[("MAKE", 0, "hello-1.0")]),
    ),
    (
        "MAKE=\"${kernelver}/$arch\"",
        Some(&[("MAKE", 0, "@K@/x86_64")]),
    ),
    ("MAKE=$UNSET_NAME", Some(&[("MAKE", 0, "")])),
    ("MAKE=x # comment", Some(&[("MAKE", 0, "x")])),
    (
        "MAKE=x#not-a-comment",
        Some(&[("MAKE", 0, "x#not-a-comment")]),
    ),
    (
        "MAKE=1 CLEAN=$MAKE",
        Some(&[("MAKE", 0, "1"), ("CLEAN", 0, "1")]),
    ),
    (
        "X=helper\nMAKE=$X\nCLEAN='$X'",
        Some(&[("MAKE", 0, "helper"), ("CLEAN", 0, "")]),
    ),
    (
        "PACKAGE_NAME=p\nMAKE='$PACKAGE_NAME'",
        Some(&[("PACKAGE_NAME", 0, "p"), ("MAKE", 0, "p")]),
    ),
    // The echo-back runs in whitelist order: PACKAGE_NAME comes before MAKE is set again.
    (
        "MAKE=p\nPACKAGE_NAME='$MAKE'",
        Some(&[("PACKAGE_NAME", 0, ""), ("MAKE", 0, "p")]),
    ),
    (
        "MAKE=(a b c)",
        Some(&[("MAKE", 0, "a"), ("MAKE", 1, "b"), ("MAKE", 2, "c")]),
    ),
    (
        "MAKE=(a \"b   c\")",
        Some(&[("MAKE", 0, "a"), ("MAKE", 1, "b c")]),
    ),
    (
        "MAKE=(one\n  two # c\n  three)",
        Some(&[("MAKE", 0, "one"), ("MAKE", 1, "two"), ("MAKE", 2, "three")]),
    ),
    ("MAKE=($UNSET_NAME x)", Some(&[("MAKE", 0, "x")])),
    ("MAKE=(\"\" x)", Some(&[("MAKE", 0, ""), ("MAKE", 1, "x")])),
    (
        "MAKE[2]=x\nMAKE[5]=y",
        Some(&[("MAKE", 2, "x"), ("MAKE", 5, "y")]),
    ),
    (
        "MAKE[1]=x\nMAKE=y",
        Some(&[("MAKE", 0, "y"), ("MAKE", 1, "x")]),
    ),
    ("MAKE[1]=x\nMAKE=(y)", Some(&[("MAKE", 0, "y")])),
    (
        "MAKE=\"a\"\r\nCLEAN=b\r\n\r\n",
        Some(&[("MAKE", 0, "a"), ("CLEAN", 0, "b")]),
    ),
    ("MAKE=\"a\rb\"", Some(&[("MAKE", 0, "a\rb")])),
    (
        "MAKE=\"^6\\.[0-9]+$\"",
        Some(&[("MAKE", 0, "^6\\.[0-9]+$")]),
    ),
    ("MAKE=\"*\"", Some(&[("MAKE", 0, "*")])),
    ("MAKE=x\\\ny", Some(&[("MAKE", 0, "xy")])),
    ("MAKE=\"a *\"", None),
    ("MAKE='a\\'", None),
    ("MAKE='a\"b c\"'", None),
    ("MAKE=$'a\\tb'", None),
    ("MAKE=${kernelver:-x}", None),
    ("MAKE=\"$(uname -r)\"", None),
    ("MAKE=`uname -r`", None),
    ("MAKE='$(uname -r)'", None),
    ("MAKE=~", None),
    ("MAKE=$verbose", None),
    ("MAKE=$HOME", None),
    ("export MAKE=x", None),
    ("MAKE=x; CLEAN=y", None),
    ("MAKE=(*)", None),
    ("source /dev/null", None),
    ("if true; then MAKE=x; fi", None),
    ("MAKE[i]=x", None),
];

#[test]
fn quoting_and_expansion_table() {
    for (text, want) in TABLE {
        let (by_static, by_bash) = both(text);
        match want {
            Some(elements) => {
                let want = expected(elements);
                assert_eq!(by_bash, want, "bash on {text:?}");
                assert_eq!(by_static, Some(want), "static on {text:?}");
            }
            None => assert_eq!(by_static, None, "static accepted {text:?}"),
        }
    }
}

#[test]
fn override_files_follow_dkms_order() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = source_dir(tmp.path());
    let base = write(
        &dir,
        "dkms.conf",
        "PACKAGE_NAME=p\nMAKE[0]=a\nMAKE[1]=b\nHELPER=h\n",
    );
    // The override sees the base file's whitelisted values but not its helpers; replacing
    // MAKE with a one-element list leaves the base's MAKE[1] in place after the echo-back.
    let over = write(
        &dir,
        "p.conf",
        "CLEAN=\"$PACKAGE_NAME-$HELPER-${MAKE[1]}\"\nMAKE=(c)\nPATCH=${MAKE[1]}\n",
    );
    let files = [base.clone(), over];
    let ctx = ctx(&base);
    let want = expected(&[
        ("PACKAGE_NAME", 0, "p"),
        ("MAKE", 0, "c"),
        ("MAKE", 1, "b"),
        ("CLEAN", 0, "p--b"),
        ("PATCH", 0, ""),
    ]);
    assert_eq!(bash::evaluate(&files, DKMS_CONF_NAMES, &ctx).unwrap(), want);
    assert_eq!(
        static_eval::evaluate(&files, DKMS_CONF_NAMES, &ctx)
            .unwrap()
            .unwrap(),
        want
    );
}

/// One piece of a random word.
fn segment() -> impl Strategy<Value = String> {
    let plain = "[a-zA-Z0-9_./:=,+%-]{1,5}";
    let single = "[ a-zA-Z\"$\\\\{}*\t]{0,6}".prop_map(|s| format!("'{s}'"));
    let dq_piece = prop_oneof![
        "[ a-zA-Z'{}*\t:]{1,3}",
        Just("\\\"".to_string()),
        Just("\\\\".to_string()),
        Just("\\$".to_string()),
        Just("$kernelver".to_string()),
        Just("${PACKAGE_NAME}".to_string()),
        Just("$UNSET".to_string()),
        Just("$/".to_string()),
        Just("\n".to_string()),
    ];
    let double = prop::collection::vec(dq_piece, 0..5).prop_map(|v| format!("\"{}\"", v.concat()));
    let escape = "[ a-z\"'$*;]".prop_map(|c| format!("\\{c}"));
    let var = prop_oneof![
        Just("${kernelver}".to_string()),
        Just("${kernel_source_dir}".to_string()),
        Just("${PACKAGE_NAME}".to_string()),
        Just("$module/".to_string()),
    ];
    prop_oneof![plain, single, double, escape, var]
}

fn word() -> impl Strategy<Value = String> {
    prop::collection::vec(segment(), 1..6).prop_map(|v| v.concat())
}

#[test]
fn random_words_agree_whenever_static_accepts() {
    let accepted = AtomicUsize::new(0);
    let total = AtomicUsize::new(0);
    let mut runner = TestRunner::new(Config {
        // PROPTEST_CASES raises it for a longer hunt.
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(200),
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (word(), word(), word(), any::<bool>());
    runner
        .run(&strategy, |(make, a, b, crlf)| {
            let eol = if crlf { "\r\n" } else { "\n" };
            let text = format!(
                "PACKAGE_NAME='p-q'{eol}MAKE={make}{eol}CLEAN=({a} {b}) #{eol}PATCH[3]={a}{eol}"
            );
            let tmp = tempfile::tempdir().unwrap();
            let conf = write(&source_dir(tmp.path()), "dkms.conf", &text);
            let ctx = ctx(&conf);
            let files = [conf];
            total.fetch_add(1, Ordering::Relaxed);
            if let Ok(d) = static_eval::evaluate(&files, DKMS_CONF_NAMES, &ctx).unwrap() {
                accepted.fetch_add(1, Ordering::Relaxed);
                let by_bash = bash::evaluate(&files, DKMS_CONF_NAMES, &ctx)
                    .map_err(|e| TestCaseError::fail(format!("bash on {text:?}: {e}")))?;
                prop_assert_eq!(d, by_bash, "conf {:?}", text);
            }
            Ok(())
        })
        .unwrap();
    let (accepted, total) = (accepted.into_inner(), total.into_inner());
    println!("static accepted {accepted} of {total} random confs");
    assert!(
        accepted * 8 >= total,
        "too few random confs accepted ({accepted}/{total}) for the comparison to mean much"
    );
}

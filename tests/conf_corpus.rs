//! The static evaluator must give exactly what the bash evaluator gives, and both exactly what
//! Debian's real dkms `safe_source` gives, on every real package conf and on synthetic tricky
//! ones, for two kernels. Also prints how many real confs take each path and how fast.

mod conf_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use conf_support::{context, real_confs, real_kernel, repo, skip_unless};
use rdkms::conf::{self, bash, static_eval, Directives, EvalContext, EvalMode, DKMS_CONF_NAMES};

/// Debian's dkms, whose own `safe_source` the last test runs.
const DKMS: &str = "/usr/sbin/dkms";

/// The fewest real confs CI accepts (tests/fetch-corpus.sh fetches 30).
const MIN_REAL: usize = 25;

/// One evaluation input: a conf and the override files sourced after it.
struct Case {
    label: String,
    files: Vec<PathBuf>,
    /// For synthetic files: the path the file's `# static: yes|no` line promises.
    expect_static: Option<bool>,
}

fn real_cases() -> Vec<Case> {
    let confs = real_confs();
    skip_unless(
        confs.len() >= MIN_REAL,
        &format!(
            "only {} real dkms.conf files under tests/corpus/work/src (run tests/fetch-corpus.sh)",
            confs.len()
        ),
    );
    confs
        .into_iter()
        .map(|f| Case {
            label: f.parent().and_then(Path::file_name).map_or_else(
                || f.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            ),
            files: vec![f],
            expect_static: None,
        })
        .collect()
}

/// `tests/corpus/synthetic/X.conf`, each followed by its `X.override*.conf` files in order.
fn synthetic_cases() -> Vec<Case> {
    let dir = repo().join("tests/corpus/synthetic");
    let mut all: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/corpus/synthetic is committed")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "conf"))
        .collect();
    all.sort();
    let cases: Vec<Case> = all
        .iter()
        .filter(|p| !p.to_string_lossy().contains(".override"))
        .map(|base| {
            let stem = base.file_stem().unwrap().to_string_lossy().into_owned();
            let mut files = vec![base.clone()];
            files.extend(
                all.iter()
                    .filter(|p| {
                        p.file_name()
                            .unwrap()
                            .to_string_lossy()
                            .starts_with(&format!("{stem}.override"))
                    })
                    .cloned(),
            );
            let first = std::fs::read_to_string(base).unwrap_or_default();
            let expect_static = match first.lines().next().map(str::trim_end) {
                Some("# static: yes") => Some(true),
                Some("# static: no") => Some(false),
                _ => panic!("{} must start with '# static: yes|no'", base.display()),
            };
            Case {
                label: format!("synthetic/{stem}"),
                files,
                expect_static,
            }
        })
        .collect();
    assert!(cases.len() >= 15, "synthetic corpus is incomplete");
    cases
}

/// The two kernels every case is read for: the installed one, and an older one whose build
/// tree is a temporary directory with a small .config (so config-sourcing confs differ).
fn kernels(tmp: &Path) -> Vec<(String, PathBuf)> {
    let old = tmp.join("linux-headers-5.10.0-1-amd64");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(
        old.join(".config"),
        "CONFIG_64BIT=y\nCONFIG_VIDEO_V4L2=m\nCONFIG_USB=y\n# CONFIG_USB_HID is not set\n",
    )
    .unwrap();
    vec![
        (
            real_kernel(),
            PathBuf::from(format!("/lib/modules/{}/build", real_kernel())),
        ),
        ("5.10.0-1-amd64".to_string(), old),
    ]
}

#[test]
fn static_and_bash_agree_on_every_conf() {
    let tmp = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for case in real_cases().into_iter().chain(synthetic_cases()) {
        for (kernel, ksrc) in kernels(tmp.path()) {
            let ctx = context(&case.files[0], &kernel, &ksrc);
            let by_bash = bash::evaluate(&case.files, DKMS_CONF_NAMES, &ctx)
                .unwrap_or_else(|e| panic!("{} ({kernel}): bash: {e}", case.label));
            let by_static = static_eval::evaluate(&case.files, DKMS_CONF_NAMES, &ctx).unwrap();
            if let Some(expected) = case.expect_static {
                assert_eq!(
                    by_static.is_ok(),
                    expected,
                    "{} ({kernel}): static path {:?}",
                    case.label,
                    by_static.as_ref().err().map(ToString::to_string)
                );
            }
            if let Ok(d) = by_static {
                assert_eq!(
                    d, by_bash,
                    "{} ({kernel}): static differs from bash",
                    case.label
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 0, "the static evaluator accepted nothing");
}

/// Runs Debian's own `safe_source`, extracted from /usr/sbin/dkms at test time, on `files`
/// with the context variables set, and returns the whitelisted arrays it leaves behind.
fn real_dkms(files: &[PathBuf], ctx: &EvalContext) -> Directives {
    let mut script = String::new();
    for (name, value) in &ctx.vars {
        script.push_str(&format!("{name}={}\n", bash::shell_quote(value)));
    }
    script.push_str(&format!(
        r#"
__h_main() {{
__h_n=$1; shift
__h_files=("${{@:1:$__h_n}}"); shift "$__h_n"
__h_names=("$@")
mktemp_or_die() {{ mktemp "$@"; }}
deprecated() {{ :; }}
eval "$(sed -n '/^safe_source()/,/^}}/p' {DKMS})"
for __h_v in "${{__h_names[@]}}"; do unset "$__h_v"; done
for __h_f in "${{__h_files[@]}}"; do safe_source "$__h_f" "${{__h_names[@]}}"; done
for __h_v in "${{__h_names[@]}}"; do
    eval '__h_idx=("${{!'"$__h_v"'[@]}}")'
    for __h_i in "${{__h_idx[@]}}"; do
        eval '__h_val=${{'"$__h_v"'[$__h_i]}}'
        printf '%s\0%s\0%s\0' "$__h_v" "$__h_i" "$__h_val"
    done
done
}}
__h_main "$@"
"#
    ));
    let out = Command::new("bash")
        .args(["--noprofile", "--norc", "-c", &script, "harness"])
        .arg(files.len().to_string())
        .args(files)
        .args(DKMS_CONF_NAMES)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LC_ALL", "C")
        .current_dir("/")
        .output()
        .expect("run bash");
    assert!(out.status.success(), "harness failed: {out:?}");
    let mut d = Directives::default();
    let fields: Vec<&[u8]> = out.stdout.split(|&b| b == 0).collect();
    for rec in fields.chunks_exact(3) {
        let mut value = String::from_utf8_lossy(rec[2]).into_owned();
        // dkms 3.0.10 keeps a trailing CR; newer DKMS strips it, as rdkms does.
        if value.ends_with('\r') {
            value.pop();
        }
        d.set(
            &String::from_utf8_lossy(rec[0]),
            String::from_utf8_lossy(rec[1]).parse().unwrap(),
            value,
        );
    }
    d
}

#[test]
fn real_dkms_safe_source_agrees() {
    let has_safe_source = std::fs::read_to_string(DKMS)
        .map(|t| t.contains("\nsafe_source() {"))
        .unwrap_or(false);
    if skip_unless(
        has_safe_source,
        &format!("{DKMS} with a safe_source function is not installed"),
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut compared = 0;
    for case in real_cases().into_iter().chain(synthetic_cases()) {
        for (kernel, ksrc) in kernels(tmp.path()) {
            let ctx = context(&case.files[0], &kernel, &ksrc);
            let (ours, path) =
                conf::evaluate(&case.files, DKMS_CONF_NAMES, &ctx, EvalMode::Auto).unwrap();
            let theirs = real_dkms(&case.files, &ctx);
            assert_eq!(
                ours, theirs,
                "{} ({kernel}, {path:?}): rdkms differs from dkms's safe_source",
                case.label
            );
            compared += 1;
        }
    }
    println!("real dkms safe_source agreed on {compared} evaluations");
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time(reps: usize, mut f: impl FnMut()) -> Duration {
    median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

#[test]
fn corpus_figures() {
    let cases = real_cases();
    if cases.is_empty() {
        return;
    }
    let kernel = real_kernel();
    let ksrc = PathBuf::from(format!("/lib/modules/{kernel}/build"));
    let (mut on_static, mut on_bash) = (Vec::new(), Vec::new());
    let mut bash_on_static_files = Vec::new();
    for case in &cases {
        let ctx = context(&case.files[0], &kernel, &ksrc);
        let bash_time = time(5, || {
            bash::evaluate(&case.files, DKMS_CONF_NAMES, &ctx).unwrap();
        });
        match static_eval::evaluate(&case.files, DKMS_CONF_NAMES, &ctx).unwrap() {
            Ok(_) => {
                on_static.push(time(50, || {
                    static_eval::evaluate(&case.files, DKMS_CONF_NAMES, &ctx)
                        .unwrap()
                        .unwrap();
                }));
                bash_on_static_files.push(bash_time);
            }
            Err(declined) => {
                println!("bash fallback: {}: {}", case.label, declined.reason);
                on_bash.push(bash_time);
            }
        }
    }
    println!(
        "real confs: {} on the static path, {} on the bash fallback",
        on_static.len(),
        on_bash.len()
    );
    if !on_static.is_empty() {
        println!(
            "median per evaluation: static {:?} (bash on the same files {:?})",
            median(on_static),
            median(bash_on_static_files)
        );
    }
    if !on_bash.is_empty() {
        println!("median per evaluation: bash fallback {:?}", median(on_bash));
    }
}

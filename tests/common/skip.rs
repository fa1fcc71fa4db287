//! The one skip helper of the integration tests (every prerequisite check is built on it),
//! included by `common` and `conf_support`.

/// Whether a test must stop because a prerequisite is missing (`ok` is false): panics under
/// `CI` (where `.ci/run` installs everything), else says `skipped: WHY` on stderr and returns
/// true, so a test can `return` on it.
pub fn skip_unless(ok: bool, why: &str) -> bool {
    if ok {
        return false;
    }
    if std::env::var_os("CI").is_some() {
        panic!("prerequisite missing under CI: {why}");
    }
    eprintln!("skipped: {why}");
    true
}

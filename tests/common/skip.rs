//! The one skip helper of the integration tests, included by every support module.

/// A prerequisite is missing: panics under `CI` (where `.ci/run` installs everything), else
/// says `skipped: WHY` on stderr and returns true, so a test can `return` on it.
pub fn skip(why: &str) -> bool {
    if std::env::var_os("CI").is_some() {
        panic!("prerequisite missing under CI: {why}");
    }
    eprintln!("skipped: {why}");
    true
}

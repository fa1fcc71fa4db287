//! A fake kernel build tree for the fast test tier: `<root>/lib/modules/K/build/Makefile`
//! behaves like kbuild just enough to turn every `obj-m` entry of `$(M)` into a `<name>.ko`
//! text file carrying a `.modinfo`-like block, in milliseconds and without headers.

use std::fs;
use std::path::{Path, PathBuf};

/// The fake kbuild. Honours, in the module directory: `fail` (print it and fail like a compile
/// error), `sleep` (touch `started`, then sleep that many seconds) and `stamp` (copied into every
/// .ko so tests can tell builds apart).
const MAKEFILE: &str = r#"# Fake kbuild for rdkms tests.
KVER := @KVER@
REL := $(or $(KERNELRELEASE),$(KVER))
.PHONY: default modules clean
default modules:
	@test -n "$(M)" || { echo "fake kbuild: M= is required" >&2; exit 2; }
	@cd "$(M)" && if [ -f sleep ]; then touch started; sleep "$$(cat sleep)"; fi
	@cd "$(M)" && if [ -f fail ]; then cat fail >&2; echo "fake kbuild: error 1" >&2; exit 1; fi
	@cd "$(M)" && for o in $$(sed -n 's/^obj-m[[:space:]]*[:+]*=//p' Makefile Kbuild 2>/dev/null); do \
	  n=$${o%.o}; \
	  { echo "FAKE-KO"; echo "name=$$n"; echo "vermagic=$(REL)"; \
	    echo "stamp=$$(cat stamp 2>/dev/null)"; echo "jobs=$(filter -j%,$(MAKEFLAGS))"; } > "$$n.ko" || exit 1; \
	  echo "  LD [M]  $(M)/$$n.ko"; \
	done
clean:
	@true
"#;

/// Creates headers for `kernel` under `<root>/lib/modules/K/build` and returns that dir.
pub fn install(root: &Path, kernel: &str) -> PathBuf {
    let build = root.join("lib/modules").join(kernel).join("build");
    headers_at(&build, kernel);
    build
}

/// Creates fake headers in an arbitrary directory (for `--kernelsourcedir`).
pub fn headers_at(dir: &Path, kernel: &str) {
    fs::create_dir_all(dir.join("include/linux")).unwrap();
    fs::write(dir.join("Makefile"), MAKEFILE.replace("@KVER@", kernel)).unwrap();
    fs::write(
        dir.join(".config"),
        "CONFIG_MODULES=y\nCONFIG_ACPI=y\nCONFIG_VIDEO_DEV=m\nCONFIG_MODULE_SIG_HASH=\"sha256\"\n",
    )
    .unwrap();
}

/// Gives the fake kernel at `build` a `scripts/sign-file` that appends
/// `signature=HASH KEY CERT` to the module, like the real tool appends a signature.
pub fn add_sign_file(build: &Path) {
    let tool = build.join("scripts/sign-file");
    fs::create_dir_all(tool.parent().unwrap()).unwrap();
    fs::write(&tool, "#!/bin/sh\necho \"signature=$1 $2 $3\" >> \"$4\"\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
}

/// The marker block of a fake module file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeKo {
    pub name: String,
    pub vermagic: String,
    pub stamp: String,
    pub jobs: String,
    pub signature: String,
}

/// Reads a fake .ko (panics if it is not one).
pub fn read_ko(path: &Path) -> FakeKo {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(
        text.starts_with("FAKE-KO"),
        "{} is not a fake .ko",
        path.display()
    );
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
            .unwrap_or("")
            .to_string()
    };
    FakeKo {
        name: field("name"),
        vermagic: field("vermagic"),
        stamp: field("stamp"),
        jobs: field("jobs"),
        signature: field("signature"),
    }
}

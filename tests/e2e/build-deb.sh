#!/usr/bin/env bash
# Builds the rdkms .deb the way a user would, from a clean copy of the checkout (only the files
# git tracks, so nothing local leaks in), and runs lintian on it.
#
#   tests/e2e/build-deb.sh OUTDIR
#
# Leaves OUTDIR/rdkms_VERSION_ARCH.deb, OUTDIR/build.log and OUTDIR/lintian.txt. Exits non-zero
# if the build fails or lintian reports an error (E:); warnings are listed, not fatal.
# The build reuses this checkout's target/ (CARGO_TARGET_DIR) so CI compiles the crates once.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:?usage: build-deb.sh OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)

version=$(dpkg-parsechangelog -l "$repo/debian/changelog" -S Version)
src=$out/src/rdkms-$version
rm -rf "$out/src"
mkdir -p "$src"
if git -C "$repo" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    # Tracked and new (not ignored) files as they are in the work tree: a clean checkout of it.
    (cd "$repo" && git ls-files -z --cached --others --exclude-standard --deduplicate \
        | xargs -0 sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' sh \
        | tar --null -T - -cf -) | tar -C "$src" -xf -
else
    (cd "$repo" && tar --exclude=./target --exclude=./tests/corpus/work -cf - .) | tar -C "$src" -xf -
fi

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
rm -f "$out"/rdkms_*.deb "$out"/rdkms_*.buildinfo "$out"/rdkms_*.changes
# Debian's rustc when it is new enough (Debian 13), else rustup's through the build profile
# (Debian 12; debian/rules).
need=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' "$repo/Cargo.toml")
have=$(dpkg-query -W -f='${Version}' rustc 2>/dev/null || true)
profile=()
if [ -z "$have" ] || dpkg --compare-versions "$have" lt "$need"; then
    profile=(-Ppkg.rdkms.rustup)
fi
echo "build-deb: rust-version $need, Debian's rustc ${have:-absent}: ${profile[*]:-system toolchain}"
if ! (cd "$src" && dpkg-buildpackage -b -us -uc "${profile[@]}") >"$out/build.log" 2>&1; then
    tail -n 40 "$out/build.log" >&2
    echo "build-deb: dpkg-buildpackage failed, see $out/build.log" >&2
    exit 1
fi
mv "$out"/src/rdkms_*.deb "$out"/src/rdkms_*.buildinfo "$out"/src/rdkms_*.changes "$out/"
rm -rf "$out/src"
deb=$(ls "$out"/rdkms_*.deb)

# --fail-on error: warnings are reported (and explained in the README), errors fail the build.
lintian --info --display-info --fail-on error "$deb" >"$out/lintian.txt" 2>&1 && rc=0 || rc=$?
cat "$out/lintian.txt"
echo "build-deb: $deb ($(du -k "$deb" | cut -f1) KiB), lintian exit $rc"
exit "$rc"

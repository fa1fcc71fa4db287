#!/usr/bin/env bash
# DKMS 3.2.2's own test suite (run_test.sh and test/ from Debian 13's dkms source package) run
# against rdkms installed as the system's `dkms` in a Debian 13 (trixie) chroot. The suite is
# destructive (it writes /usr/src, /var/lib/dkms, /lib/modules, /etc/dkms and moves
# /etc/os-release), hence the chroot. It is fetched from the archive at run time and adapted with
# sed so that it keeps going past a failing check: every check prints `PASS: <id> <what>` or
# `FAIL: <id> <what>`, and the run ends with `N passed, N failed`.
#
# usage: tests/dkms-suite/run.sh [--dkms] [--strict] [--only SECTION] [--write-baseline]
#   --dkms            run the suite against trixie's real dkms 3.2.2 instead (proves the harness)
#   --strict          fail on any failing check that is not a named deviation (deviations.txt)
#                     (default: fail only on checks listed in expected-pass.txt, the baseline)
#   --only SECTION    run one section of the suite (run_test.sh's own argument)
#   --write-baseline  rewrite expected-pass.txt from this run's passing checks
# env: CACHE (default /var/tmp/rdkms-suite-cache): the trixie base tarball (refreshed weekly),
#      the suite tarball; KEEP=1 keeps the chroot; LOGS: where the full log goes.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=${REPO:-$(cd "$HERE/../.." && pwd)}
SUITE=trixie
DKMS_UPSTREAM=3.2.2
CACHE=${CACHE:-/var/tmp/rdkms-suite-cache}
IMPL=${IMPL:-rdkms}
MODE=baseline
ONLY=
WRITE_BASELINE=0
while [ $# -gt 0 ]; do
    case $1 in
        --dkms) IMPL=debian ;;
        --strict) MODE=strict ;;
        --only) ONLY=$2; shift ;;
        --write-baseline) WRITE_BASELINE=1 ;;
        *) echo "run.sh: unknown argument '$1' (see the usage at the top of $0)" >&2; exit 2 ;;
    esac
    shift
done
[ "$(id -u)" = 0 ] || { echo "run.sh: needs root (debootstrap, chroot, mounts)" >&2; exit 2; }

mkdir -p "$CACHE"
WORK=$(mktemp -d /var/tmp/rdkms-suite.XXXXXX)
R=$WORK/root
LOGS=${LOGS:-$WORK/logs}
mkdir -p "$R" "$LOGS"
START=$(date +%s)

log() { echo "[$(($(date +%s) - START))s] $*" >&2; }

umount_all() {
    local m
    for m in dev/pts dev sys proc; do
        mountpoint -q "$R/$m" && umount -l "$R/$m"
    done
    return 0
}
finish() {
    local rc=$?
    # A timeout or ^C: stop the suite (its bash; what it started ends with it) before unmounting.
    [ -z "${SUITE_PID:-}" ] || kill "$SUITE_PID" 2>/dev/null || true
    umount_all
    if [ "${KEEP:-0}" = 1 ]; then
        log "chroot kept in $R"
    else
        rm -rf --one-file-system "$R"
        rmdir "$WORK" 2>/dev/null || true
    fi
    log "logs in $LOGS"
    exit "$rc"
}
trap finish EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

cin() { chroot "$R" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"; }

# The host's Debian archive URI (from its apt configuration: no host name in this repository).
mirror() {
    apt-get indextargets --format '$(REPO_URI)' 'Identifier: Packages' |
        awk '$1 ~ /\/debian\/$/ { print $1; exit }'
}

# The chroot's packages: kernel headers (6.12, xz-compressed signed modules; the suite needs no
# image), the toolchain, and what run_test.sh calls (stdbuf, modinfo, openssl, patch, diff).
PACKAGES=(linux-headers-amd64 gcc make patch openssl kmod diffutils coreutils xz-utils zstd
    ca-certificates)

# A trixie root with PACKAGES and a deb-src line, cached as a tarball for a week.
base_root() {
    local tarball=$CACHE/$SUITE-base.tar.zst m
    if [ -s "$tarball" ] && [ -n "$(find "$tarball" -mtime -7)" ]; then
        tar -C "$R" --zstd -xpf "$tarball"
        log "unpacked cached $tarball"
        return
    fi
    m=$(mirror)
    [ -n "$m" ] || { echo "run.sh: the host's apt configuration names no Debian archive" >&2; exit 2; }
    log "debootstrap $SUITE from $m"
    debootstrap --variant=minbase "$SUITE" "$R" "$m" >"$LOGS/debootstrap.log" 2>&1 ||
        { tail -20 "$LOGS/debootstrap.log" >&2; exit 2; }
    rm -f "$R/etc/apt/sources.list"
    printf 'Types: deb deb-src\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: %s\n' \
        "$m" "$SUITE" /usr/share/keyrings/debian-archive-keyring.gpg \
        >"$R/etc/apt/sources.list.d/debian.sources"
    printf 'Acquire::Languages "none";\n' >"$R/etc/apt/apt.conf.d/99suite"
    printf '#!/bin/sh\nexit 101\n' >"$R/usr/sbin/policy-rc.d"
    chmod +x "$R/usr/sbin/policy-rc.d"
    echo force-unsafe-io >"$R/etc/dpkg/dpkg.cfg.d/suite-unsafe-io"
    cp -L /etc/resolv.conf "$R/etc/resolv.conf"
    mount_all
    cin apt-get -q update >"$LOGS/apt.log" 2>&1
    cin apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >>"$LOGS/apt.log" 2>&1 ||
        { tail -20 "$LOGS/apt.log" >&2; exit 2; }
    cin apt-get clean
    umount_all
    tar -C "$R" -I 'zstd -T0 -3' -cpf "$tarball.new" . && mv "$tarball.new" "$tarball"
    log "packed $tarball"
}

# linux-headers-amd64 depends on the kernel image, but the suite loads no module: without the
# kernel's own ~6000 modules each depmod takes a fraction of a second instead of seconds. One
# is kept, so that dkms (and rdkms) still see the kernel's module compression (.ko.xz).
trim_root() {
    local keep
    keep=$(cd "$R" && find lib/modules/*/kernel -type f -name '*.ko*' | sort | sed -n 1p)
    find "$R"/lib/modules/*/kernel -type f ! -path "$R/$keep" -delete
    rm -f "$R"/boot/initrd.img-*
}

mount_all() {
    local m
    for m in proc sys dev dev/pts; do
        mountpoint -q "$R/$m" || mount --bind "/$m" "$R/$m"
    done
}

# run_test.sh and test/ from dkms's upstream tarball, which the chroot's Sources index names with
# its SHA-256 (apt-get source needs the .dsc, which this archive mirror lacks).
fetch_suite() {
    local src dir file sha tarball
    src=$(cin apt-cache showsrc dkms | awk -v v="$DKMS_UPSTREAM" '
        /^Version: / { keep = index($2, v "-") == 1 }
        keep && /^Directory: / { dir = $2 }
        keep && /^Checksums-Sha256:/ { sums = 1; next }
        sums && /^ / { if (keep && $3 ~ /\.orig\.tar\./) { file = $3; sha = $1 } next }
        { sums = 0 }
        END { if (file) print dir, file, sha }')
    read -r dir file sha <<<"$src"
    [ -n "${sha:-}" ] || { echo "run.sh: no dkms $DKMS_UPSTREAM in the $SUITE Sources index" >&2; exit 2; }
    tarball=$CACHE/$file
    if ! echo "$sha  $tarball" | sha256sum -c --status 2>/dev/null; then
        /usr/lib/apt/apt-helper download-file "$(mirror)$dir/$file" "$tarball" "SHA256:$sha" \
            >"$LOGS/suite-download.log" 2>&1 || { cat "$LOGS/suite-download.log" >&2; exit 2; }
    fi
    mkdir -p "$R/root/suite"
    tar -C "$R/root/suite" --strip-components=1 -xzf "$tarball" \
        "dkms-$DKMS_UPSTREAM/run_test.sh" "dkms-$DKMS_UPSTREAM/test"
    log "suite: $file (sha256 $sha)"
}

install_impl() {
    if [ "$IMPL" = debian ]; then
        cin apt-get install -y -q --no-install-recommends dkms >>"$LOGS/apt.log" 2>&1 ||
            { tail -20 "$LOGS/apt.log" >&2; exit 2; }
        log "installed $(cin dpkg-query -W -f='dkms ${Version}' dkms)"
        return
    fi
    # The .deb's layout (debian/rules), without building the .deb.
    (cd "$REPO" && cargo build --release --quiet)
    install -D -m0755 "${CARGO_TARGET_DIR:-$REPO/target}/release/rdkms" "$R/usr/sbin/rdkms"
    ln -sf rdkms "$R/usr/sbin/dkms"
    install -D -m0755 "$REPO/kernel-postinst.d/dkms" "$R/etc/kernel/postinst.d/dkms"
    install -D -m0755 "$REPO/hooks/prerm.d/dkms" "$R/etc/kernel/prerm.d/dkms"
    install -D -m0755 "$REPO/hooks/header_postinst.d/dkms" "$R/etc/kernel/header_postinst.d/dkms"
    install -D -m0755 "$REPO/hooks/dkms_autoinstaller" "$R/usr/lib/dkms/dkms_autoinstaller"
    install -D -m0755 "$REPO/hooks/common.postinst" "$R/usr/lib/dkms/common.postinst"
    install -D -m0644 "$REPO/debian/framework.conf" "$R/etc/dkms/framework.conf"
    mkdir -p "$R/var/lib/dkms"
    log "installed rdkms from $REPO/target/release"
}

# Keep going past failing checks: the check helpers are wrapped (after their definitions) to count
# and name each check; `set -e` goes so that a failing step does not end the run; the suite's
# inline `exit 1` checks count as failures. Sections are run_test.sh's own `$only` names.
adapt_suite() {
    local t=$R/root/suite/run_test.sh
    sed -i -e 's/^set -eu$/set -u/' \
        -e 's/^\(if \[\[ ! \$only || \$only = \)\([a-z_-]*\)\( \]\]; then\)$/\1\2\3 __section=\2/' \
        -e "/^DKMS_VERSION=/,\$s/^\( *\)echo \('[^']*'\)$/\1__what=\2; echo \"\$__what\"/" \
        -e '/^DKMS_VERSION=/,$s/^\( *\)echo \("[^"]*"\)$/\1__what=\2; echo "$__what"/' \
        -e '/^DKMS_VERSION=/,$s/^\( *\)exit 1$/\1__fail_inline/' \
        -e "/^DKMS_VERSION=/,\$s/^trap \([a-z_]*\) EXIT$/trap '\1; __summary' EXIT/" \
        -e '/^DKMS_VERSION=/r /dev/stdin' "$t" <<'EOF'
declare -A __n=()
__section=setup __what= __pass=0 __failed=0
__result() {
    local verdict=PASS
    __n[$__section]=$(( ${__n[$__section]:-0} + 1 ))
    if [ "$1" = 0 ]; then __pass=$((__pass + 1)); else __failed=$((__failed + 1)); verdict=FAIL; fi
    printf '%s: %s#%03d %s\n' "$verdict" "$__section" "${__n[$__section]}" "${__what//${KERNEL_VER}/KVER}"
}
__fail_inline() { __result 1; }
eval "$(declare -f run_with_expected_error | sed '1s/^run_with_expected_error/__orig_rwee/')"
eval "$(declare -f run_status_with_expected_output | sed '1s/^run_status_with_expected_output/__orig_rswe/')"
eval "$(declare -f check_make_log_content | sed '1s/^check_make_log_content/__orig_cmlc/')"
eval "$(declare -f check_module_source_tree_created | sed -e '1s/^check_module_source_tree_created/__orig_cmst/' -e 's/exit 1/return 1/')"
eval "$(declare -f check_no_dkms_test | sed -e '1s/^check_no_dkms_test/__orig_cndt/' -e 's/exit 1/return 1/')"
eval "$(declare -f file_not_exists | sed '1s/^file_not_exists/__orig_fne/')"
run_with_expected_error() { local rc=0; __orig_rwee "$@" || rc=1; __result $rc; }
run_with_expected_output() { local rc=0; __orig_rwee 0 "$@" || rc=1; __result $rc; }
run_status_with_expected_output() { local rc=0; __orig_rswe "$@" || rc=1; __result $rc; }
check_make_log_content() { local rc=0; __orig_cmlc "$@" || rc=1; __result $rc; }
check_module_source_tree_created() { local rc=0; __orig_cmst "$@" || rc=1; __result $rc; }
check_no_dkms_test() { local rc=0; __orig_cndt "$@" || rc=1; __result $rc; }
file_not_exists() { local rc=0; __orig_fne "$@" || rc=1; __result $rc; }
__complete=0
__summary() {
    [ "$__complete" = 1 ] || echo "run_test.sh stopped before its end"
    echo "$__pass passed, $__failed failed"
}
trap 'tmpdir_cleanup; __summary' EXIT
EOF
    echo '__complete=1' >>"$t"
    grep -q '^__summary()' "$t" || { echo "run.sh: could not adapt run_test.sh" >&2; exit 2; }
}

run_suite() {
    local kver
    kver=$(cd "$R/usr/src" && ls -d linux-headers-*-amd64 | sed 's/^linux-headers-//')
    [ "$(echo "$kver" | wc -l)" = 1 ] || { echo "run.sh: expected one kernel's headers, got: $kver" >&2; exit 2; }
    log "running run_test.sh ${ONLY:+$ONLY }for $kver with $IMPL as dkms"
    # chroot execs env, which execs bash: $! is the suite's own process.
    chroot "$R" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
        KERNEL_VER="$kver" bash /root/suite/run_test.sh ${ONLY:+"$ONLY"} >"$LOGS/suite.log" 2>&1 &
    SUITE_PID=$!
    wait "$SUITE_PID" || true
    SUITE_PID=
    grep -E '^(PASS|FAIL): ' "$LOGS/suite.log" >"$LOGS/results.txt" || true
}

report() {
    local summary bad=0 line
    summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$LOGS/suite.log" | tail -n 1 || true)
    grep '^FAIL: ' "$LOGS/results.txt" || true
    echo "per section (passed/total):"
    sed -E 's/^(PASS|FAIL): ([^#]*)#.*/\1 \2/' "$LOGS/results.txt" |
        awk '{ t[$2]++; if ($1 == "PASS") p[$2]++; if (!($2 in o)) o[$2] = n++ }
             END { for (s in o) printf "%d %s %d/%d\n", o[s], s, p[s], t[s] }' |
        sort -n | cut -d' ' -f2- | sed 's/^/  /'
    echo "${summary:-no summary}"
    if [ -z "$summary" ] || grep -q '^run_test.sh stopped before its end$' "$LOGS/suite.log"; then
        echo "run.sh: run_test.sh stopped before its end (see $LOGS/suite.log)" >&2
        return 1
    fi
    if [ "$WRITE_BASELINE" = 1 ]; then
        sed -n 's/^PASS: //p' "$LOGS/results.txt" >"$HERE/expected-pass.txt"
        log "wrote $HERE/expected-pass.txt"
    fi
    [ "$IMPL" = rdkms ] || return 0
    while IFS= read -r line; do
        if [ "$MODE" = strict ]; then
            grep -qxF "${line#FAIL: }" <(grep -v '^#' "$HERE/deviations.txt" | cut -f1) || {
                echo "not a named deviation: $line"; bad=1; }
        elif [ -f "$HERE/expected-pass.txt" ] && grep -qxF "${line#FAIL: }" "$HERE/expected-pass.txt"; then
            echo "regression (passed in the baseline): $line"
            bad=1
        fi
    done < <(grep '^FAIL: ' "$LOGS/results.txt")
    return "$bad"
}

base_root
trim_root
mount_all
fetch_suite
install_impl
adapt_suite
run_suite
log "suite done"
report

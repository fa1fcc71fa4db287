# shellcheck shell=bash
# The machinery of tests/e2e/run.sh: timed steps with one log each, PASS/FAIL checks that are
# counted at the end, commands inside the chroot with a clean environment, and bind mounts that
# are always undone, the chroot's apt sources and what its kernel expects of modules. Sourced by
# run.sh and all-packages.sh; needs WORK, R (the chroot), LOGS, CACHE and SUITE set.

# fd 3 is the console: step output goes to the step's log, verdicts and progress to fd 3.
exec 3>&2
RESULTS=$LOGS/results.tsv   # PASS|FAIL <tab> step <tab> what
TIMES=$LOGS/timings.tsv     # step <tab> seconds <tab> exit status
STATE=$WORK/state           # NAME=value lines handed from one step (a subshell) to the next
: >"$RESULTS"
: >"$TIMES"
: >"$STATE"
STEP=setup
STEP_NO=0

log() { printf '[e2e %s] %s\n' "$(date +%T)" "$*" >&3; }

# verdict PASS|FAIL WHAT: one counted line.
verdict() {
    printf '%s\t%s\t%s\n' "$1" "$STEP" "$2" >>"$RESULTS"
    printf '[e2e %s] %s %s: %s\n' "$(date +%T)" "$1" "$STEP" "$2" >&3
}

# check WHAT CMD...: a counted verdict on CMD's exit status; the step goes on either way.
check() {
    local what=$1
    shift
    echo "--- check: $what"
    if "$@"; then verdict PASS "$what"; else verdict FAIL "$what"; fi
    return 0
}

# tools_present TOOL:PACKAGE...: true when every TOOL is on PATH; names each missing one and
# the package that brings it.
tools_present() {
    local t missing=0
    for t in "$@"; do
        if ! command -v "${t%%:*}" >/dev/null; then
            echo "missing: ${t%%:*} (apt-get install ${t#*:})" >&2
            missing=1
        fi
    done
    return "$missing"
}

# require WHAT CMD...: like check, but a failure ends the step (the steps run under set -e).
require() {
    local what=$1
    shift
    echo "--- require: $what"
    if "$@"; then
        verdict PASS "$what"
    else
        verdict FAIL "$what"
        return 1
    fi
}

state_set() { printf '%s=%q\n' "$1" "$2" >>"$STATE"; }

# step NAME FUNCTION: runs FUNCTION in a subshell with errexit, its output in its own log, and
# records the wall time. A step that ends early counts as one more failure. Always returns 0
# and sets OK[NAME] to 1 or 0: bash ignores errexit inside anything called from an if, && or
# || context, so step must only ever be called as a plain command.
declare -A OK=()
step() {
    local name=$1 fn=$2 s e rc
    STEP_NO=$((STEP_NO + 1))
    STEP=$name
    STEP_LOG=$LOGS/$(printf %02d "$STEP_NO")-$name.log
    log "== step $name"
    s=$(date +%s.%N)
    set +e
    (
        set -e
        # shellcheck disable=SC1090
        . "$STATE"
        "$fn"
    ) >"$STEP_LOG" 2>&1
    rc=$?
    set -e
    e=$(date +%s.%N)
    printf '%s\t%.1f\t%s\n' "$name" "$(echo "$e - $s" | bc)" "$rc" >>"$TIMES"
    OK[$name]=1
    if [ "$rc" -ne 0 ]; then
        OK[$name]=0
        verdict FAIL "step ended early (exit $rc); last lines of $STEP_LOG:"
        tail -n 25 "$STEP_LOG" | sed 's/^/    | /' >&3
    fi
    # shellcheck disable=SC1090
    . "$STATE"
}

# ok NAME...: every named step ran to its end.
ok() {
    local n
    for n in "$@"; do [ "${OK[$n]:-0}" = 1 ] || return 1; done
}

# skip NAME WHY: a step that cannot run because an earlier one failed counts as a failure.
skip() {
    STEP=$1
    verdict FAIL "skipped: $2"
}

# mirror [SUITE]: the Debian archive URI the host's apt uses (no host name in this repository):
# the one serving SUITE (default $SUITE) if the host has it, else the host's own release's,
# which also carries SUITE.
mirror() {
    apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Identifier: Packages' |
        awk -v s="${1:-$SUITE}" '$1 ~ /\/debian\/$/ { if ($2 == s) { print $1; found = 1; exit } any = any ? any : $1 }
            END { if (!found && any) print any }'
}

# The chroot's apt sources in deb822: SUITE and SUITE-updates from the host's Debian archive,
# SUITE-security from its security archive, with the COMPONENTS given (default main).
chroot_sources() {
    local comps=${COMPONENTS:-main} uri
    apt-get indextargets --format '$(REPO_URI)' 'Identifier: Packages' | sort -u |
        grep -E '/debian(-security)?/$' | while read -r uri; do
        case "$uri" in
            */debian-security/) printf 'Types: deb\nURIs: %s\nSuites: %s-security\n' "$uri" "$SUITE" ;;
            *) printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\n' "$uri" "$SUITE" "$SUITE" ;;
        esac
        printf 'Components: %s\nSigned-By: %s\n\n' "$comps" /usr/share/keyrings/debian-archive-keyring.gpg
    done | awk -v RS= -v ORS='\n\n' '!seen[$0]++'
}

# prepare_chroot: makes the unpacked minbase system in R usable for the tests: apt sources from
# the host's archive (chroot_sources), downloads kept for the cache, no service started, the
# host's DNS, no fsync per file (the chroot is thrown away; a kernel is ~5000 files) and
# MODULES=list for initramfs-tools (update-initramfs ~1.5 s instead of ~18 s, Debian's scripts
# still run; conf.d is not a conffile, so it may exist before initramfs-tools is installed);
# then the bind mounts.
prepare_chroot() {
    rm -f "$R/etc/apt/sources.list"
    chroot_sources >"$R/etc/apt/sources.list.d/debian.sources"
    printf 'Acquire::Languages "none";\nAPT::Keep-Downloaded-Packages "true";\n' >"$R/etc/apt/apt.conf.d/99e2e"
    printf '#!/bin/sh\nexit 101\n' >"$R/usr/sbin/policy-rc.d"
    chmod +x "$R/usr/sbin/policy-rc.d"
    cp -L /etc/resolv.conf "$R/etc/resolv.conf"
    echo force-unsafe-io >"$R/etc/dpkg/dpkg.cfg.d/e2e-unsafe-io"
    mkdir -p "$R/etc/initramfs-tools/conf.d"
    echo 'MODULES=list' >"$R/etc/initramfs-tools/conf.d/e2e-fast"
    mount_all
}

# kconfig KVER NAME: the value of CONFIG_NAME in the chroot's kernel config (empty if unset).
kconfig() {
    sed -n "s/^CONFIG_$2=//p" "$R/boot/config-$1" | tr -d '"'
}

# module_ext KVER: how the kernel's own modules are stored, so how DKMS modules must be.
module_ext() {
    if [ "$(kconfig "$1" MODULE_COMPRESS_XZ)" = y ]; then
        echo .ko.xz
    elif [ "$(kconfig "$1" MODULE_COMPRESS_ZSTD)" = y ]; then
        echo .ko.zst
    elif [ "$(kconfig "$1" MODULE_COMPRESS_GZIP)" = y ]; then
        echo .ko.gz
    else
        echo .ko
    fi
}

# sig_valid FILE CERT: FILE (a module, compressed or not) carries an appended signature that
# verifies against CERT (DER or PEM) over the module's bytes: what the kernel checks at load
# time once the MOK is enrolled, which a QEMU boot without UEFI cannot show. The trailer is the
# kernel's: signature, 12-byte struct module_signature (sig_len big-endian last), magic.
sig_valid() {
    local f=$1 cert=$2 t n len rc=0
    t=$(mktemp -d)
    case "$f" in *.xz) xz -dc ;; *.zst) zstd -qdc ;; *.gz) gzip -dc ;; *) cat ;; esac <"$f" >"$t/ko"
    n=$(stat -c %s "$t/ko")
    if [ "$(tail -c 28 "$t/ko")" != "~Module signature appended~" ]; then
        echo "$f: no appended signature"
        rm -rf "$t"
        return 1
    fi
    len=$(tail -c 32 "$t/ko" | head -c 4 | od -An -tu1 | awk '{ print $1 * 16777216 + $2 * 65536 + $3 * 256 + $4 }')
    head -c $((n - 40 - len)) "$t/ko" >"$t/data"
    tail -c $((40 + len)) "$t/ko" | head -c "$len" >"$t/sig"
    openssl x509 -inform DER -in "$cert" -out "$t/cert.pem" 2>/dev/null || cp "$cert" "$t/cert.pem"
    openssl cms -verify -binary -inform DER -in "$t/sig" -content "$t/data" -certfile "$t/cert.pem" \
        -nointern -noverify -out /dev/null 2>&1 || rc=$?
    rm -rf "$t"
    return "$rc"
}

# kver_of_meta: the ABI linux-image-amd64 points at, e.g. 6.1.0-56-amd64.
kver_of_meta() {
    cin dpkg-query -W -f='${Depends}\n' linux-image-amd64 | sed -E 's/^linux-image-([^ ,]+).*/\1/'
}

# cin CMD...: run CMD in the chroot with a clean environment (no host PATH, no CI variables).
cin() {
    chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 \
        DEBIAN_FRONTEND=noninteractive "$@" </dev/null
}

# apt_in ARGS...: apt-get in the chroot, never interactive (a dpkg conffile prompt fails it).
apt_in() {
    cin apt-get -o DPkg::Lock::Timeout=120 -o APT::Color=0 -y -q --no-install-recommends "$@"
}

# The bind mounts of the chroot, in mount order; the apt archive cache (DEBS, default
# CACHE/debs) keeps downloads between local runs. Two chroots whose apt runs at the same time
# need a DEBS each: apt locks its archive directory.
MOUNTS=(proc sys dev dev/pts var/cache/apt/archives)

mount_all() {
    local m src debs=${DEBS:-$CACHE/debs}
    mkdir -p "$debs/partial"
    for m in "${MOUNTS[@]}"; do
        src=/$m
        [ "$m" = var/cache/apt/archives ] && src=$debs
        mkdir -p "$R/$m"
        mountpoint -q "$R/$m" || mount --bind "$src" "$R/$m"
    done
}

umount_all() {
    local i m
    [ -n "${R:-}" ] && [ -d "$R" ] || return 0
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
        m=$R/${MOUNTS[i]}
        if mountpoint -q "$m" 2>/dev/null; then umount "$m" 2>/dev/null || umount -l "$m"; fi
    done
}

# Anything still mounted below the chroot (then it must not be deleted).
mounted_below() { findmnt -rn -o TARGET | grep -F "$R/" || true; }

# summary: timings per step, then the plain count line test runners look for.
summary() {
    local pass fail
    log "timings (seconds):"
    column -t -s $'\t' -N step,seconds,exit "$TIMES" | sed 's/^/    /' >&3
    pass=$(grep -c '^PASS' "$RESULTS" || true)
    fail=$(grep -c '^FAIL' "$RESULTS" || true)
    if [ "$fail" -gt 0 ]; then
        log "failed checks:"
        grep '^FAIL' "$RESULTS" | cut -f2- | sed 's/^/    /' >&3
    fi
    echo "$pass passed, $fail failed" >&3
    [ "$fail" -eq 0 ]
}

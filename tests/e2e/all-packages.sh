#!/usr/bin/env bash
# Every *-dkms package of a Debian release, through its own maintainer scripts, with Debian's
# dkms and with rdkms, each in its own chroot made from the same tarball at the same time (so
# the same kernel, checked); prints a table comparing what each installed (files, compression,
# signature) and whether the purge left nothing. Not part of CI: all of Debian 13 main plus the
# contrib/non-free extras takes hours on 2 cores.
#
#   sudo tests/e2e/all-packages.sh [PACKAGE...]
#   sudo TABLE_ONLY=1 tests/e2e/all-packages.sh      # the table from the results so far
#
# Without PACKAGE: EXTRA first, then every package of SUITE main whose name ends in -dkms and
# that depends on dkms, as the archive's Packages index lists them. Environment: RDKMS_DEB
# (default: build it with build-deb.sh), SUITE (default trixie), EXTRA (default: zfs-dkms
# nvidia-kernel-dkms broadcom-sta-dkms r8168-dkms, from contrib/non-free), WORK (default
# /var/tmp/rdkms-all; its results/ and logs/ stay), CACHE (as for run.sh), PKG_TIMEOUT
# (seconds for one apt install, default 2400). Results: WORK/results/table.md and one log per
# package and tool in WORK/logs. A run resumes the results so far: a package already in
# WORK/results/TOOL.tsv is not run again for TOOL (the chroots are made afresh); the kernel and
# Debian's dkms must be the ones those results had. FRESH=1 deletes them first.
set -euo pipefail
export LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive

HERE=$(cd "$(dirname "$0")" && pwd)
WORK=${WORK:-/var/tmp/rdkms-all}
CACHE=${CACHE:-/var/tmp/rdkms-e2e-cache}
SUITE=${SUITE:-trixie}
EXTRA=${EXTRA-zfs-dkms nvidia-kernel-dkms broadcom-sta-dkms r8168-dkms}
COMPONENTS="main contrib non-free non-free-firmware"
LOGS=$WORK/logs
OUT=$WORK/results

PKG_TIMEOUT=${PKG_TIMEOUT:-2400}
TOOLS=(dkms rdkms)

# table: one row per package from the results so far; rdkms's files compared with dkms's.
table() {
    local kd kr
    kd=$(cat "$OUT/kernel-dkms" 2>/dev/null || true)
    kr=$(cat "$OUT/kernel-rdkms" 2>/dev/null || true)
    {
        echo "$SUITE, kernel $kd (its modules are *$(cat "$OUT/ext" 2>/dev/null)), $(cat "$OUT/versions" 2>/dev/null)"
        [ "$kd" = "$kr" ] || echo "WARNING: the chroots have different kernels: dkms $kd, rdkms $kr"
        echo
        echo "| package | dkms 3.2.2 | rdkms | same files | compressed d/r | signed d/r | purge clean d/r | modules |"
        echo "|---|---|---|---|---|---|---|---|"
        join -t $'\t' -a1 -a2 -e - -o '0,1.2,1.3,1.4,1.5,1.6,2.2,2.3,2.4,2.5,2.6' \
            <(sort -t $'\t' -k1,1 "$OUT/dkms.tsv") <(sort -t $'\t' -k1,1 "$OUT/rdkms.tsv") |
            while IFS=$'\t' read -r p dr df dx ds dc rr rf rx rs rc; do
                same=no
                [ "$df" = "$rf" ] && same=yes
                # A package one tool has not reached yet (a run still going) is not compared.
                if [ "$dr" = - ] || [ "$rr" = - ]; then
                    same=-
                elif [ "$same" = no ]; then
                    df="dkms: $df; rdkms: $rf"
                fi
                echo "| $p | $dr | $rr | $same | $dx/$rx | $ds/$rs | $dc/$rc | $df |"
            done
    } >"$OUT/table.md"
    cat "$OUT/table.md"
}

if [ "${TABLE_ONLY:-0}" = 1 ]; then
    table
    exit 0
fi

[ "$(id -u)" = 0 ] || {
    echo "all-packages.sh: needs root (debootstrap, chroot, mounts)" >&2
    exit 2
}
if [ -e "$WORK" ] && findmnt -rn -o TARGET | grep -qF "$WORK/"; then
    echo "all-packages.sh: something is still mounted below $WORK; unmount it first" >&2
    exit 2
fi
[ "${FRESH:-0}" = 1 ] && rm -rf --one-file-system "$WORK"
rm -rf --one-file-system "$WORK"/root-* "$WORK"/debs-*
mkdir -p "$LOGS" "$OUT" "$CACHE"
touch "$OUT/dkms.tsv" "$OUT/rdkms.tsv"
# shellcheck source=lib.sh
. "$HERE/lib.sh"
unmount_chroots() {
    local t
    for t in "${TOOLS[@]}"; do R=$WORK/root-$t umount_all; done
}
trap unmount_chroots EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

deb=${RDKMS_DEB:-}
if [ -z "$deb" ]; then
    log "building the rdkms .deb"
    "$HERE/build-deb.sh" "$WORK/deb" >"$LOGS/build-deb.log" 2>&1
    deb=$(ls "$WORK"/deb/rdkms_*.deb)
fi

tarball=$CACHE/minbase-$SUITE.tar.zst
if [ ! -s "$tarball" ]; then
    log "debootstrap $SUITE"
    R=$WORK/debootstrap
    debootstrap --variant=minbase "$SUITE" "$R" "$(mirror)" >"$LOGS/debootstrap.log" 2>&1
    tar -C "$R" -I 'zstd -T0 -3' -cpf "$tarball.new" . && mv "$tarball.new" "$tarball"
    rm -rf --one-file-system "$R"
fi

# make_chroot TOOL: a fresh chroot for TOOL with a kernel and its headers, and TOOL as the dkms.
# Each chroot has its own apt archive directory: hard links to the cache's .debs (not its lock
# file, whose lock would then be shared).
make_chroot() {
    local tool=$1 k
    R=$WORK/root-$tool
    DEBS=$WORK/debs-$tool
    mkdir -p "$R" "$DEBS"
    find "$CACHE/debs-$SUITE" -maxdepth 1 -name '*.deb' -exec ln -f -t "$DEBS" {} + 2>/dev/null || true
    tar -C "$R" --zstd -xpf "$tarball"
    prepare_chroot
    cin apt-get -q update >"$LOGS/base-$tool.log" 2>&1
    # Debian's dkms comes with what its Recommends would bring for signing and compression;
    # rdkms alone with a compiler, as a minimal install.
    if [ "$tool" = dkms ]; then
        apt_in install dkms gcc make openssl xz-utils zstd linux-image-amd64 linux-headers-amd64
    else
        cp "$deb" "$R/tmp/rdkms.deb"
        apt_in install /tmp/rdkms.deb gcc make zstd linux-image-amd64 linux-headers-amd64
    fi >>"$LOGS/base-$tool.log" 2>&1
    k=$(kver_of_meta)
    if [ -s "$OUT/kernel-$tool" ] && [ "$(cat "$OUT/kernel-$tool")" != "$k" ]; then
        echo "all-packages.sh: $OUT holds results for kernel $(cat "$OUT/kernel-$tool"), the archive now has $k; start over with FRESH=1" >&2
        return 1
    fi
    echo "$k" >"$OUT/kernel-$tool"
}

# trace PKG TOOL: install PKG, describe what it installed, purge it, check nothing is left.
# Appends one line to $OUT/TOOL.tsv: package, result, files, stored as EXT, signed, purge clean.
trace() {
    local p=$1 tool=$2 l=$LOGS/$2-$1.log res files ext=- signed=- clean=- f s0
    s0=$(date +%s)
    if timeout "$PKG_TIMEOUT" chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=120 \
        -o APT::Color=0 -y -q --no-install-recommends install "$p" </dev/null >"$l" 2>&1; then
        res=installed
    else
        res="apt failed"
        cin dpkg --configure -a >>"$l" 2>&1 || true
    fi
    files=$({ find "$R/lib/modules/$K/updates" -type f -name '*.ko*' -printf '%P\n' 2>/dev/null || true; } |
        sort | paste -sd' ')
    if [ -n "$files" ]; then
        ext=yes signed=yes
        for f in $files; do
            [[ "$f" == *"$EXT" ]] || ext=no
            [ -n "$(cin modinfo -F signer "/lib/modules/$K/updates/$f")" ] || signed=no
        done
    fi
    cin dkms status >>"$l" 2>&1 || true
    if apt_in purge "$p" >>"$l" 2>&1; then
        clean=yes
        if find "$R/lib/modules/$K/updates" -type f -name '*.ko*' 2>/dev/null | grep . >>"$l" ||
            find "$R/var/lib/dkms" -mindepth 1 -maxdepth 1 ! -name '.*' ! -name 'mok.*' | grep . >>"$l"; then
            clean=no
        fi
    else
        clean="purge failed"
    fi
    # Leave nothing behind for the next package, whatever happened.
    apt_in purge "$p" >/dev/null 2>&1 || true
    apt_in autoremove --purge >/dev/null 2>&1 || true
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$p" "$res" "${files:--}" "$ext" "$signed" "$clean" \
        "$(($(date +%s) - s0))" >>"$OUT/$tool.tsv"
    log "$tool $p: $res; ${files:-no modules}; $EXT $ext; signed $signed; purge clean $clean"
}

# trace_all TOOL: every package in turn in TOOL's chroot (R).
trace_all() {
    local tool=$1 p
    K=$(cat "$OUT/kernel-$tool")
    EXT=$(module_ext "$K")
    log "$tool: kernel $K, modules stored as *$EXT"
    for p in "${PKGS[@]}"; do
        if cut -f1 "$OUT/$tool.tsv" | grep -qxF -- "$p"; then
            log "$tool $p: done in an earlier run"
        else
            trace "$p" "$tool"
        fi
    done
}

log "chroots: $SUITE ($COMPONENTS), one per tool"
R=$WORK/root-dkms
make_chroot dkms
if [ $# -gt 0 ]; then
    PKGS=("$@")
else
    # (The record is read whole before grep looks at it: grep -q quitting early would make
    # apt-cache die of SIGPIPE, which pipefail counts as no match.)
    mapfile -t PKGS < <(
        for p in $EXTRA; do echo "$p"; done
        for p in $(cin apt-cache search --names-only -- '-dkms$' | awk '{ print $1 }' | sort); do
            rec=$(cin apt-cache show --no-all-versions "$p")
            case "$(sed -n 's/^Section: //p' <<<"$rec")" in contrib/* | non-free/*) continue ;; esac
            grep -qE '^(Pre-)?Depends:.*(^|[ ,|])dkms([ ,(]|$)' <<<"$rec" && echo "$p"
        done
    )
fi
log "${#PKGS[@]} packages: ${PKGS[*]}"
module_ext "$(cat "$OUT/kernel-dkms")" >"$OUT/ext"
dv=$(cin dpkg-query -W -f='${Version}' dkms)
if [ -s "$OUT/versions" ] && [ "$(sed -E 's/^dkms ([^,]+),.*/\1/' "$OUT/versions")" != "$dv" ]; then
    echo "all-packages.sh: $OUT holds results for $(cut -d, -f1 "$OUT/versions"), the archive now has dkms $dv; start over with FRESH=1" >&2
    exit 2
fi
echo "dkms $dv, $(basename "$deb")" >"$OUT/versions"
# The two tools run side by side, each in its own chroot; the dkms chroot exists already.
(trace_all dkms) &
dkms_pid=$!
(make_chroot rdkms && trace_all rdkms) &
rdkms_pid=$!
rc=0
wait "$dkms_pid" || rc=$?
wait "$rdkms_pid" || rc=$?
table
exit "$rc"

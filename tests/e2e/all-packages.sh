#!/usr/bin/env bash
# Every *-dkms package of a Debian release, through its own maintainer scripts, first with
# Debian's dkms and then with rdkms, on the same chroot and kernel; prints a table comparing
# what each installed (files, compression, signature) and whether the purge left nothing. Not
# part of CI: all of Debian 13 main plus the contrib/non-free extras takes hours on 2 cores.
#
#   sudo tests/e2e/all-packages.sh [PACKAGE...]
#
# Without PACKAGE: every package of SUITE whose name ends in -dkms and that depends on dkms,
# plus EXTRA. Environment: RDKMS_DEB (default: build it with build-deb.sh), SUITE (default
# trixie), EXTRA (default: zfs-dkms nvidia-kernel-dkms broadcom-sta-dkms r8168-dkms, from
# contrib/non-free), WORK (default /var/tmp/rdkms-all; its results/ and logs/ stay), CACHE
# (as for run.sh). Results: WORK/results/table.md and one log per package and dkms in WORK/logs.
set -euo pipefail
export LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive

HERE=$(cd "$(dirname "$0")" && pwd)
WORK=${WORK:-/var/tmp/rdkms-all}
CACHE=${CACHE:-/var/tmp/rdkms-e2e-cache}
SUITE=${SUITE:-trixie}
EXTRA=${EXTRA-zfs-dkms nvidia-kernel-dkms broadcom-sta-dkms r8168-dkms}
COMPONENTS="main contrib non-free non-free-firmware"
R=$WORK/root
LOGS=$WORK/logs
OUT=$WORK/results

[ "$(id -u)" = 0 ] || {
    echo "all-packages.sh: needs root (debootstrap, chroot, mounts)" >&2
    exit 2
}
if [ -e "$WORK" ] && findmnt -rn -o TARGET | grep -qF "$WORK/"; then
    echo "all-packages.sh: something is still mounted below $WORK; unmount it first" >&2
    exit 2
fi
rm -rf --one-file-system "$R"
mkdir -p "$R" "$LOGS" "$OUT" "$CACHE"
# shellcheck source=lib.sh
. "$HERE/lib.sh"
trap umount_all EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

deb=${RDKMS_DEB:-}
if [ -z "$deb" ]; then
    log "building the rdkms .deb"
    "$HERE/build-deb.sh" "$WORK/deb" >"$LOGS/build-deb.log" 2>&1
    deb=$(ls "$WORK"/deb/rdkms_*.deb)
fi

log "chroot: $SUITE ($COMPONENTS)"
tarball=$CACHE/minbase-$SUITE.tar.zst
if [ -s "$tarball" ]; then
    tar -C "$R" --zstd -xpf "$tarball"
else
    debootstrap --variant=minbase "$SUITE" "$R" "$(mirror)" >"$LOGS/debootstrap.log" 2>&1
fi
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
cin apt-get -q update >"$LOGS/base.log" 2>&1
log "base: Debian's dkms, gcc, make, openssl, kernel and headers"
apt_in install dkms gcc make openssl xz-utils zstd linux-image-amd64 linux-headers-amd64 \
    >>"$LOGS/base.log" 2>&1
K=$(cin dpkg-query -W -f='${Depends}\n' linux-image-amd64 | sed -E 's/^linux-image-([^ ,]+).*/\1/')
EXT=$(module_ext "$K")
DKMS_V=$(cin dpkg-query -W -f='${Version}' dkms)
log "kernel $K, modules stored as *$EXT; dkms $DKMS_V"

if [ $# -gt 0 ]; then
    PKGS=("$@")
else
    mapfile -t PKGS < <(
        for p in $(cin apt-cache search --names-only -- '-dkms$' | awk '{ print $1 }' | sort); do
            sec=$(cin apt-cache show --no-all-versions "$p" | sed -n 's/^Section: //p')
            case "$sec" in contrib/* | non-free/*) continue ;; esac
            cin apt-cache show --no-all-versions "$p" | grep -qE '^(Pre-)?Depends:.*(^|[ ,|])dkms([ ,(]|$)' &&
                echo "$p"
        done
        for p in $EXTRA; do echo "$p"; done
    )
fi
log "${#PKGS[@]} packages: ${PKGS[*]}"

# trace PKG TOOL: install PKG, describe what it installed, purge it, check nothing is left.
# Appends one line to $OUT/TOOL.tsv: package, result, files, stored as EXT, signed, purge clean.
trace() {
    local p=$1 tool=$2 l=$LOGS/$2-$1.log res files ext=- signed=- clean=- f s0
    s0=$(date +%s)
    if apt_in install "$p" >"$l" 2>&1; then res=installed; else res="apt failed"; fi
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

: >"$OUT/dkms.tsv"
: >"$OUT/rdkms.tsv"
for p in "${PKGS[@]}"; do trace "$p" dkms; done
cp "$deb" "$R/tmp/rdkms.deb"
log "switching to rdkms"
apt_in install /tmp/rdkms.deb >"$LOGS/switch.log" 2>&1
for p in "${PKGS[@]}"; do trace "$p" rdkms; done

# The table: one row per package; rdkms's files compared with dkms's.
{
    echo "$SUITE, kernel $K (its modules are *$EXT), dkms $DKMS_V, $(basename "$deb")"
    echo
    echo "| package | dkms | rdkms | same files | $EXT d/r | signed d/r | purge clean d/r | modules |"
    echo "|---|---|---|---|---|---|---|---|"
    join -t $'\t' -a1 -e - -o '0,1.2,1.3,1.4,1.5,1.6,2.2,2.3,2.4,2.5,2.6' \
        <(sort -t $'\t' -k1,1 "$OUT/dkms.tsv") <(sort -t $'\t' -k1,1 "$OUT/rdkms.tsv") |
        while IFS=$'\t' read -r p dr df dx ds dc rr rf rx rs rc; do
            same=no
            [ "$df" = "$rf" ] && same=yes
            [ "$same" = yes ] || df="dkms: $df; rdkms: $rf"
            echo "| $p | $dr | $rr | $same | $dx/$rx | $ds/$rs | $dc/$rc | $df |"
        done
} >"$OUT/table.md"
cat "$OUT/table.md"

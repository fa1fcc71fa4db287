#!/usr/bin/env bash
# End-to-end test of the rdkms Debian package on a real Debian 12 or 13 system built from scratch: a
# debootstrapped chroot with real kernels and real *-dkms packages from the archive, driven
# through their unmodified maintainer scripts and the kernel hooks, then a QEMU (TCG) boot of
# the chroot's kernel that loads the modules rdkms built. Needs root and the Debian archive
# (found in the host's apt configuration). Ends with "N passed, N failed"; exit 0 if none failed.
#
#   sudo tests/e2e/run.sh
#
# Environment:
#   RDKMS_DEB  the .deb to test (default: build it with tests/e2e/build-deb.sh)
#   WORK       scratch directory (default /var/tmp/rdkms-e2e); deleted at the end, except its
#              logs/ when something failed. KEEP=1 keeps everything.
#   CACHE      kept between runs, never in the repository (default /var/tmp/rdkms-e2e-cache):
#              the debootstrap tarball (refreshed weekly) and the chroot's downloaded .debs
#              (DEBS, default CACHE/debs-SUITE: one per suite, so that the runs for Debian 12
#              and 13 can go at the same time, each with its own WORK).
#   SUITE      Debian suite: bookworm (default, Debian 12) or trixie (Debian 13). The .deb is
#              the same for both; what a kernel expects (compressed, signed modules) is read from
#              the chroot kernel's config, the module-replacement rule of each dkms from SUITE.
set -euo pipefail
export LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
WORK=${WORK:-/var/tmp/rdkms-e2e}
CACHE=${CACHE:-/var/tmp/rdkms-e2e-cache}
SUITE=${SUITE:-bookworm}
DEBS=${DEBS:-$CACHE/debs-$SUITE}
KEEP=${KEEP:-0}
R=$WORK/root
LOGS=$WORK/logs

# The real module packages under test: package, DKMS module name, the kernel modules it installs.
# They cover a BUILD_EXCLUSIVE_CONFIG conf, a conf that needs bash (v4l2loopback), AUTOINSTALL
# in upper case (vpoll) and one package building three modules (tp-smapi). tp-smapi's third
# module, hdaps, has an unversioned twin in the kernel: Debian 12's dkms 3.0.10 keeps the
# kernel's copy (status then warns "Diff between built and installed module"); DKMS 3.2.2 installs
# it and sets the kernel's copy aside ("Original modules exist"). rdkms implements 3.2.2 on both
# releases, so it installs hdaps on both.
PKGS=(acpi-call-dkms v4l2loopback-dkms vpoll-dkms tp-smapi-dkms)
declare -A DKMS_NAME=([acpi-call-dkms]=acpi-call [v4l2loopback-dkms]=v4l2loopback
    [vpoll-dkms]=vpoll [tp-smapi-dkms]=tp_smapi)
declare -A KMODS=([acpi-call-dkms]=acpi_call [v4l2loopback-dkms]=v4l2loopback
    [vpoll-dkms]=vpoll [tp-smapi-dkms]="thinkpad_ec tp_smapi")
KMODS[tp-smapi-dkms]+=" hdaps"
# Modules that load in a plain QEMU machine (tp_smapi needs ThinkPad hardware).
BOOT_MODS="acpi_call v4l2loopback vpoll"

[ "$(id -u)" = 0 ] || {
    echo "run.sh: needs root (debootstrap, chroot, mounts)" >&2
    exit 2
}
if [ -e "$WORK" ]; then
    # A previous run that was killed: its mounts must go before its files.
    R=$WORK/root
    for m in var/cache/apt/archives dev/pts dev sys proc; do
        if mountpoint -q "$R/$m" 2>/dev/null; then umount "$R/$m" || umount -l "$R/$m"; fi
    done
    if findmnt -rn -o TARGET | grep -qF "$WORK/"; then
        echo "run.sh: something is still mounted below $WORK; unmount it first" >&2
        exit 2
    fi
    rm -rf --one-file-system "$WORK"
fi
mkdir -p "$WORK" "$LOGS" "$CACHE"
# shellcheck source=lib.sh
. "$HERE/lib.sh"

finish() {
    local rc=$?
    set +e
    if [ "$SUMMARY_DONE" = 0 ]; then
        # killed (timeout, ^C) or broken: still end with the count line
        verdict FAIL "the run ended early (exit $rc) during step $STEP"
        summary
        rc=1
    fi
    umount_all
    if [ -n "$(mounted_below)" ]; then
        log "still mounted below $R, leaving $WORK in place:"
        mounted_below >&3
    elif [ "$KEEP" = 1 ]; then
        log "KEEP=1: everything stays in $WORK"
    elif [ "$rc" -eq 0 ]; then
        rm -rf --one-file-system "$WORK"
    else
        rm -rf --one-file-system "$R" "$WORK/qemu" "$WORK/pkg"
        log "logs kept in $LOGS"
    fi
    exit "$rc"
}
SUMMARY_DONE=0
trap finish EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
# Any other fatal signal would run finish with the last command's status (often 0): name it.
trap 'exit 129' HUP
trap 'exit 141' PIPE

############################## helpers ##############################

# modules_ok KVER MOD...: each module resolves through depmod to a file built for KVER, stored
# the way that kernel stores its own modules, and signed with the MOK when it signs modules (the
# signature verified against the MOK certificate).
modules_ok() {
    local k=$1 m f vm ext signer
    shift
    ext=$(module_ext "$k")
    for m in "$@"; do
        f=$(cin modinfo -k "$k" -F filename "$m") || return 1
        case "$f" in /lib/modules/"$k"/updates/*) ;; *)
            echo "$m for $k resolves to '$f', not below /lib/modules/$k/updates"
            return 1
            ;;
        esac
        vm=$(cin modinfo -F vermagic "$f" | awk '{ print $1 }')
        [ "$vm" = "$k" ] || {
            echo "$f has vermagic $vm"
            return 1
        }
        [[ "$f" == *"$ext" ]] || {
            echo "$f: the kernel's modules end in $ext"
            return 1
        }
        if [ "$(kconfig "$k" MODULE_SIG)" = y ]; then
            signer=$(cin modinfo -F signer "$f")
            [ "$signer" = "DKMS module signing key" ] || {
                echo "$f: signer '$signer', not the MOK ('DKMS module signing key')"
                return 1
            }
            sig_valid "$R$f" "$R/var/lib/dkms/mok.pub" || {
                echo "$f: its signature does not verify against /var/lib/dkms/mok.pub"
                return 1
            }
        fi
        echo "ok: $f (signer: ${signer:-none})"
    done
}

# status_installed NAME KVER: dkms status (whichever dkms is installed) says installed.
status_installed() {
    local out
    out=$(cin dkms status "$1" -k "$2")
    echo "$out"
    [[ "$out" == *": installed"* ]]
}

# settled: the hooks left nothing for rdkms to do (its planner agrees with the system).
settled() {
    local out
    out=$(cin rdkms plan)
    echo "$out"
    [ "$out" = "Nothing to do." ]
}

# modules_absent KVER MOD...: none of these modules is installed out of tree for KVER.
modules_absent() {
    local k=$1 m
    shift
    for m in "$@"; do
        if [ -d "$R/lib/modules/$k/updates" ] && find "$R/lib/modules/$k/updates" -name "$m.ko*" | grep .; then
            return 1
        fi
    done
}

# nothing_left KVER: the kernel's module directory is gone and the dkms tree has no trace of it.
nothing_left() {
    local k=$1
    if [ -e "$R/lib/modules/$k" ]; then
        find "$R/lib/modules/$k" | head -n 20
        return 1
    fi
    ! find "$R/var/lib/dkms" -name "*$k*" | grep .
}

# The newest ABI other than K1 of K1's kernel series (6.1 on Debian 12, 6.12 on 13) with both
# image and headers in the archive. The series is kept because Debian 12 also carries 6.12
# kernels, which its own *-dkms packages do not all build for.
pick_second_kver() {
    local k1=$1 k series
    series=$(echo "$k1" | cut -d. -f1,2)
    for k in $(cin apt-cache search --names-only '^linux-headers-[0-9][0-9.]*(-[0-9]+|\+deb[0-9]+)-amd64$' |
        awk '{ print $1 }' | sed 's/^linux-headers-//' | sort -rV); do
        [ "$k" = "$k1" ] && continue
        [ "$(echo "$k" | cut -d. -f1,2)" = "$series" ] || continue
        if cin apt-cache show "linux-image-$k" >/dev/null 2>&1; then
            echo "$k"
            return 0
        fi
    done
    return 1
}

# apt_logged FILE ARGS...: apt_in, its output also kept in FILE for later checks.
apt_logged() {
    local f=$1
    shift
    apt_in "$@" 2>&1 | tee "$f"
    return "${PIPESTATUS[0]}"
}

# qemu_boot LOG KERNEL INITRD APPEND: TCG on purpose (KVM here is PVM-backed and hangs a stock
# kernel), 2 GiB, serial console to LOG, no stdin; bounded in time. no_timer_check: on a loaded
# host the emulated timer is too slow for the kernel's IO-APIC timer check, which then panics.
qemu_boot() {
    local out=$1 kernel=$2 initrd=$3 append=$4
    timeout 240 qemu-system-x86_64 -accel tcg -m 2048 -smp 1 -nodefaults -display none \
        -monitor none -no-reboot -serial "file:$out" -kernel "$kernel" -initrd "$initrd" \
        -append "console=ttyS0 panic=-1 loglevel=4 no_timer_check $append" </dev/null || true
    grep -a 'E2E' "$out" || true
}

############################## steps ##############################

s_host() {
    local lk=(-o DPkg::Lock::Timeout=600) pkgs=(debootstrap busybox-static cpio bc zstd xz-utils openssl)
    command -v dpkg-buildpackage >/dev/null || pkgs+=(dpkg-dev)
    command -v dh >/dev/null || pkgs+=(debhelper)
    command -v dh_dkms >/dev/null || pkgs+=(dh-dkms) # to build the REMAKE_INITRD package
    # A run for the other suite may be doing the same: one apt on the host at a time.
    exec 9>/run/lock/rdkms-e2e-host-apt
    flock 9
    apt-get "${lk[@]}" update -q
    apt-get "${lk[@]}" install -y -q --no-install-recommends --no-upgrade "${pkgs[@]}"
    if ! command -v qemu-system-x86_64 >/dev/null; then
        local qv
        qv=$(dpkg-query -W -f='${db:Status-Abbrev} ${Version}\n' qemu-utils 2>/dev/null |
            awk '$1 == "ii" { print $2 }')
        if [[ "$qv" == *bpo* ]]; then
            # qemu-utils from backports is installed; the host release's qemu-system-x86 would
            # remove it. Take qemu-system-x86 from the host's backports too, through a
            # throw-away source list.
            local tmp host
            host=$(. /etc/os-release && echo "$VERSION_CODENAME")
            tmp=$(mktemp -d)
            cp /etc/apt/sources.list.d/*.sources "$tmp/" 2>/dev/null || true
            cp /etc/apt/sources.list.d/*.list "$tmp/" 2>/dev/null || true
            {
                cat /etc/apt/sources.list 2>/dev/null || true
                echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $(mirror "$host") $host-backports main"
            } >"$tmp/sources.list"
            local o=("${lk[@]}" -o "Dir::Etc::sourcelist=$tmp/sources.list" -o "Dir::Etc::sourceparts=$tmp")
            apt-get "${o[@]}" update -q
            apt-get "${o[@]}" install -y -q --no-install-recommends --no-remove \
                -t "$host-backports" qemu-system-x86
            rm -rf "$tmp"
            apt-get "${lk[@]}" update -q
        else
            apt-get "${lk[@]}" install -y -q --no-install-recommends --no-upgrade --no-remove \
                qemu-system-x86
        fi
    fi
    require "host tools present (debootstrap, busybox, dh_dkms, qemu)" \
        tools_present debootstrap:debootstrap busybox:busybox-static dh_dkms:dh-dkms \
        dpkg-buildpackage:dpkg-dev dh:debhelper cpio:cpio qemu-system-x86_64:qemu-system-x86 \
        xz:xz-utils openssl:openssl
}

s_package() {
    local deb=${RDKMS_DEB:-}
    if [ -z "$deb" ]; then
        require "rdkms .deb builds with dpkg-buildpackage -b; lintian has no errors" \
            "$HERE/build-deb.sh" "$WORK/deb"
        deb=$(ls "$WORK"/deb/rdkms_*.deb)
        cp "$WORK/deb/lintian.txt" "$LOGS/lintian.txt"
    fi
    require "rdkms .deb exists: $deb" test -s "$deb"
    if [ -s "$LOGS/lintian.txt" ]; then
        grep -E '^[EWIX]:' "$LOGS/lintian.txt" | sed 's/^/    lintian: /' >&3 || true
    fi
    state_set DEB "$deb"

    # The REMAKE_INITRD test package: examples/hello-dkms, packaged with dh_dkms.
    local src=$WORK/pkg/hello-dkms-1.0
    mkdir -p "$src"
    cp -r "$HERE/hello-initrd/." "$src/"
    cp "$REPO/examples/hello-dkms/hello.c" "$REPO/examples/hello-dkms/Makefile" "$src/"
    {
        cat "$REPO/examples/hello-dkms/dkms.conf"
        echo 'REMAKE_INITRD="yes"'
    } >"$src/dkms.conf"
    require "hello-dkms (REMAKE_INITRD=yes) builds with dh_dkms" \
        sh -c "cd '$src' && dpkg-buildpackage -b -us -uc"
    state_set HELLO_DEB "$WORK/pkg/hello-dkms_1.0_all.deb"
}

s_bootstrap() {
    local tarball=$CACHE/minbase-$SUITE.tar.zst m
    m=$(mirror)
    require "the host's apt has a $SUITE mirror" test -n "$m"
    mkdir -p "$R"
    if [ -s "$tarball" ] && [ -n "$(find "$tarball" -mtime -7)" ]; then
        tar -C "$R" --zstd -xpf "$tarball"
        echo "unpacked cached $tarball"
    else
        debootstrap --variant=minbase "$SUITE" "$R" "$m"
        tar -C "$R" -I 'zstd -T0 -3' -cpf "$tarball.new" . && mv "$tarball.new" "$tarball"
    fi
    require "minimal $SUITE system in the chroot" test -x "$R/usr/bin/apt-get"

    prepare_chroot
    cat "$R/etc/apt/sources.list.d/debian.sources"
    cin apt-get -q update
    require "apt works in the chroot" cin apt-cache show linux-image-amd64
}

s_base() {
    cp "$DEB" "$R/tmp/rdkms.deb"
    require "apt installs rdkms with gcc make linux-headers-amd64 linux-image-amd64" \
        apt_in install /tmp/rdkms.deb gcc make zstd linux-headers-amd64 linux-image-amd64
    local k1
    k1=$(kver_of_meta)
    state_set K1 "$k1"
    echo "K1=$k1"
    check "/usr/sbin/dkms is rdkms" test "$(readlink "$R/usr/sbin/dkms")" = rdkms
    check "kernel, package and apt hooks are installed" test -x "$R/etc/kernel/postinst.d/dkms" \
        -a -x "$R/etc/kernel/prerm.d/dkms" -a -x "$R/etc/kernel/header_postinst.d/dkms" \
        -a -x "$R/usr/lib/dkms/common.postinst" -a -x "$R/usr/lib/dkms/dkms_autoinstaller" \
        -a -f "$R/etc/apt/apt.conf.d/80rdkms"
    check "Debian 13's hook files are installed (preinst.d, kernel-install, dkms-autopkgtest)" \
        test -x "$R/etc/kernel/preinst.d/dkms" -a -x "$R/usr/lib/kernel/install.d/40-dkms.install" \
        -a -x "$R/usr/lib/dkms/dkms-autopkgtest" \
        -a -f "$R/etc/dkms/framework.conf.d/autoinstall_all_kernels.conf"
    check "K1 $k1 got its initramfs with rdkms's hooks in place" test -s "$R/boot/initrd.img-$k1"
    check "dkms status runs and lists nothing" test -z "$(cin dkms status)"
}

s_modules() {
    local p m
    require "apt installs ${PKGS[*]} (their own maintainer scripts)" apt_in install "${PKGS[@]}"
    for p in "${PKGS[@]}"; do
        # shellcheck disable=SC2086
        check "$p: ${KMODS[$p]} built and installed for $K1" modules_ok "$K1" ${KMODS[$p]}
        check "$p: dkms status says installed for $K1" status_installed "${DKMS_NAME[$p]}" "$K1"
    done
    check "tp-smapi-dkms: hdaps replaces the kernel's own copy, as DKMS 3.2.2 does" \
        sh -c "chroot '$R' dkms status tp_smapi -k '$K1' | grep -iE 'original.modules? exist'"
    check "rdkms plan: nothing left to do" settled
    cin dkms status

    # The apt hook: a module uninstalled behind apt's back is back after any dpkg run.
    local v
    v=$(cd "$R/var/lib/dkms/acpi-call" && ls -d [0-9]*)
    cin dkms uninstall "acpi-call/$v" -k "$K1"
    check "dkms uninstall took acpi_call out of $K1" modules_absent "$K1" acpi_call
    require "apt runs dpkg (reinstall of zstd)" apt_in install --reinstall zstd
    check "apt's DPkg::Post-Invoke hook (80rdkms) reinstalled acpi_call for $K1" \
        modules_ok "$K1" acpi_call

    # What "Testsuite: autopkgtest-pkg-dkms" runs, on one package.
    check "dkms-autopkgtest vpoll-dkms passes" sh -c \
        "chroot '$R' /usr/lib/dkms/dkms-autopkgtest vpoll-dkms </dev/null | tee /dev/stderr | grep -q '^I: PASS vpoll/'"
    check "vpoll installed for $K1 after dkms-autopkgtest" modules_ok "$K1" vpoll
    check "dkms-autopkgtest left autoinstall on" test ! -e "$R/etc/dkms/no-autoinstall"
}

all_kmods() {
    local p
    for p in "${PKGS[@]}"; do echo "${KMODS[$p]}"; done
}

# mtime_of KVER MOD: modification time of the module file KVER loads for MOD.
mtime_of() {
    stat -c %Y "$R$(cin modinfo -k "$1" -F filename "$2")"
}

s_kernel2() {
    local k2 p t0
    # The same ABI reinstalled in place: preinst.d unbuilds, postinst.d rebuilds against it.
    t0=$(mtime_of "$K1" vpoll)
    sleep 1
    require "apt reinstalls linux-image-$K1 (same ABI)" apt_in install --reinstall "linux-image-$K1"
    check "same-ABI kernel reinstall rebuilt vpoll (preinst.d + postinst.d hooks)" \
        test "$(mtime_of "$K1" vpoll)" -gt "$t0"
    # shellcheck disable=SC2046
    check "every module of $K1 installed after the reinstall" modules_ok "$K1" $(all_kmods)

    k2=$(pick_second_kver "$K1") || true
    require "a second kernel ABI with image and headers is in the archive" test -n "$k2"
    state_set K2 "$k2"
    echo "K2=$k2"
    require "apt installs linux-image-$k2 and its headers" \
        apt_in install "linux-image-$k2" "linux-headers-$k2"
    for p in "${PKGS[@]}"; do
        # shellcheck disable=SC2086
        check "kernel postinst hook built $p for $k2" modules_ok "$k2" ${KMODS[$p]}
    done

    require "apt purges linux-image-$k2 and its headers" \
        apt_in purge "linux-image-$k2" "linux-headers-$k2"
    check "prerm hook left nothing in /lib/modules/$k2 or the dkms tree" nothing_left "$k2"
    # shellcheck disable=SC2046
    check "modules of $K1 untouched by the purge of $k2" modules_ok "$K1" $(all_kmods)

    require "apt installs linux-image-$k2 alone" \
        apt_logged "$WORK/image-only.log" install "linux-image-$k2"
    # shellcheck disable=SC2046
    check "nothing built for $k2 without its headers" modules_absent "$k2" $(all_kmods)
    check "the hook names linux-headers-$k2 when they are missing" \
        grep -q "linux-headers-$k2" "$WORK/image-only.log"
    require "apt installs linux-headers-$k2 in a later run" apt_in install "linux-headers-$k2"
    for p in "${PKGS[@]}"; do
        # shellcheck disable=SC2086
        check "header_postinst hook built $p for $k2" modules_ok "$k2" ${KMODS[$p]}
    done
    check "rdkms plan: nothing left to do" settled
}

# initramfs_runs KVER: update-initramfs runs that covered KVER, from the wrapper's log.
initramfs_runs() {
    awk -v k="$1" '{ for (i = 1; i < NF; i++) if ($i == "-k" && ($(i + 1) == k || $(i + 1) == "all")) n++ }
        END { print n + 0 }' "$R/var/log/e2e-update-initramfs.log"
}

s_initrd() {
    local k n
    # Count update-initramfs runs per kernel through a diverted wrapper.
    cin dpkg-divert --local --rename --add /usr/sbin/update-initramfs
    cat >"$R/usr/sbin/update-initramfs" <<'EOF'
#!/bin/sh
echo "$*" >>/var/log/e2e-update-initramfs.log
exec /usr/sbin/update-initramfs.distrib "$@"
EOF
    chmod +x "$R/usr/sbin/update-initramfs"
    install -D -m0755 "$HERE/initramfs-probe" "$R/etc/initramfs-tools/scripts/init-top/e2e-probe"
    : >"$R/var/log/e2e-update-initramfs.log"
    cp "$HELLO_DEB" "$R/tmp/hello-dkms.deb"
    require "apt installs hello-dkms (REMAKE_INITRD) with kernels $K1 and $K2 present" \
        apt_in install /tmp/hello-dkms.deb
    echo "update-initramfs runs:"
    cat "$R/var/log/e2e-update-initramfs.log"
    for k in "$K1" "$K2"; do
        check "hello built and installed for $k" modules_ok "$k" hello
        check "initramfs of $k contains hello.ko" \
            sh -c "chroot '$R' lsinitramfs /boot/initrd.img-$k | grep -E '/hello\.ko'"
        n=$(initramfs_runs "$k")
        check "exactly one update-initramfs run for $k (saw $n)" test "$n" -eq 1
    done

    require "apt purges $K2 with the REMAKE_INITRD module built for it" \
        apt_in purge "linux-image-$K2" "linux-headers-$K2"
    check "nothing left of $K2" nothing_left "$K2"
    check "no initramfs left for $K2" test ! -e "$R/boot/initrd.img-$K2"
}

s_qemu() {
    local q=$WORK/qemu d m p i=0 out seen=" "
    mkdir -p "$q"
    # 1. tiny busybox initramfs with the archive modules rdkms built (and what they depend on)
    d=$q/tiny
    mkdir -p "$d/bin" "$d/dev" "$d/proc" "$d/sys" "$d/mod"
    cp "$(command -v busybox)" "$d/bin/busybox"
    cp "$HERE/tiny-init" "$d/init"
    echo "$BOOT_MODS" >"$d/targets"
    for m in $BOOT_MODS; do
        for p in $(cin modprobe -S "$K1" --show-depends "$m" | awk '$1 == "insmod" { print $2 }'); do
            case "$seen" in *" $p "*) continue ;; esac
            seen="$seen$p "
            i=$((i + 1))
            cp "$R$p" "$d/mod/$(printf %02d $i)-$(basename "$p")"
        done
    done
    ls "$d/mod"
    # shellcheck disable=SC2086
    check "the modules booted are rdkms's files from updates/dkms, stored and signed as $K1 expects" \
        modules_ok "$K1" $BOOT_MODS
    (cd "$d" && find . | cpio -o -H newc 2>/dev/null | gzip -1 >"$q/tiny.cpio.gz")
    out=$LOGS/qemu-tiny.log
    qemu_boot "$out" "$R/boot/vmlinuz-$K1" "$q/tiny.cpio.gz" ""
    for m in $BOOT_MODS; do
        check "$m (built by rdkms) loads in a QEMU boot of $K1" grep -aq "E2E-LOADED: $m\b" "$out"
    done
    check "v4l2loopback created /dev/video0 in the VM" grep -aq "E2E-DEVICE: /dev/video0" "$out"
    check "vpoll created /dev/vpoll in the VM" grep -aq "E2E-DEVICE: /dev/vpoll" "$out"
    check "acpi_call answered an ACPI call in the VM" grep -aq "E2E-ACPI-CALL: \[" "$out"

    # 2. the chroot's own Debian initramfs, regenerated by rdkms for the REMAKE_INITRD module
    out=$LOGS/qemu-initramfs.log
    qemu_boot "$out" "$R/boot/vmlinuz-$K1" "$R/boot/initrd.img-$K1" "rdkms_e2e_probe=hello"
    check "hello loads from the initramfs of $K1 in QEMU" \
        grep -aq "E2E-INITRAMFS-LOADED: hello" "$out"
    rm -rf "$q"
}

# status_now FILE: the installed dkms's status, saved to FILE.
status_now() {
    cin dkms status >"$1"
    cat "$1"
}

# status_meaning FILE: dkms status lines with each suffix reduced to the condition it reports.
# DKMS 3.0.10 and 3.2.2 word the same conditions differently ("(original_module exists)" /
# "(Original modules exist)", "(WARNING! Diff between built and installed module!)" /
# "(Differences between built and installed modules)", "(WARNING! Missing some built
# modules!)" / "(Built modules are missing in the kernel modules folder)"), and rdkms's wording
# need not be that of the dkms it replaces on either release. A switch must keep every module,
# version, kernel, state and condition; the wording belongs to whichever dkms is installed.
status_meaning() {
    sed -E -e 's/ \((original_module exists|Original modules exist)\)/ [original-module]/' \
        -e 's/ \((WARNING! Diff between built and installed module!|Differences between built and installed modules)\)/ [diff-built-installed]/' \
        -e 's/ \((WARNING! Missing some built modules!|Built modules are missing in the kernel modules folder)\)/ [missing-built]/' \
        "$1"
}

# same_status A B: the two status files report the same modules in the same states.
same_status() {
    diff -u <(status_meaning "$1") <(status_meaning "$2") && echo "same meaning:" && cat "$2"
}

reinstall() {
    apt_in purge "$1" && apt_in install "$1"
}

s_switch() {
    local s=$WORK/status
    mkdir -p "$s"
    status_now "$s/rdkms-1"
    require "status lists the modules before the switch" test -s "$s/rdkms-1"

    require "apt replaces rdkms with Debian's dkms" apt_in install dkms
    check "/usr/sbin/dkms is Debian's again" sh -c \
        "chroot '$R' dpkg-query -S /usr/sbin/dkms | grep -q '^dkms:' && test ! -L '$R/usr/sbin/dkms'"
    status_now "$s/debian-1"
    check "Debian's dkms status reports what rdkms's did (suffix wording aside)" same_status "$s/rdkms-1" "$s/debian-1"
    # shellcheck disable=SC2046
    check "modules of $K1 still installed" modules_ok "$K1" $(all_kmods) hello

    # Debian's dkms now removes and builds one package itself, so rdkms takes over its work.
    require "Debian's dkms purges and reinstalls vpoll-dkms" reinstall vpoll-dkms
    check "vpoll rebuilt by Debian's dkms for $K1" modules_ok "$K1" vpoll
    status_now "$s/debian-2"

    require "apt replaces Debian's dkms with rdkms" apt_in install /tmp/rdkms.deb
    check "/usr/sbin/dkms is rdkms again" test "$(readlink "$R/usr/sbin/dkms")" = rdkms
    check "hook conffiles are rdkms's again" sh -c "grep -q rdkms '$R/etc/kernel/postinst.d/dkms' \
        && grep -q rdkms '$R/etc/kernel/prerm.d/dkms' && grep -q rdkms '$R/etc/kernel/header_postinst.d/dkms'"
    status_now "$s/rdkms-2"
    check "rdkms status reports what Debian's dkms did (suffix wording aside)" same_status "$s/debian-2" "$s/rdkms-2"
    # shellcheck disable=SC2046
    check "modules of $K1 still installed" modules_ok "$K1" $(all_kmods) hello

    require "rdkms removes vpoll-dkms that Debian's dkms built (package prerm)" \
        apt_in purge vpoll-dkms
    check "vpoll gone from $K1 and the dkms tree" \
        sh -c "! test -e '$R/var/lib/dkms/vpoll' && ! find '$R/lib/modules/$K1' -name 'vpoll.ko*' | grep ."
}

s_purge() {
    local before after
    before=$(cin dkms status)
    require "dpkg purges rdkms (forced past the *-dkms packages depending on it)" \
        cin dpkg --purge --force-depends rdkms
    check "rdkms's own files are gone" sh -c \
        "! ls -d '$R'/var/lib/dkms/.rdkms* 2>/dev/null && test ! -e '$R/usr/sbin/dkms' -a ! -e '$R/etc/kernel/postinst.d/dkms'"
    check "module trees and installed modules stay" sh -c \
        "test -d '$R/var/lib/dkms/acpi-call' && test -n \"\$(find '$R/lib/modules/$K1/updates' -name 'acpi_call.ko*')\""
    after=$(cd "$R/var/lib/dkms" && find . -maxdepth 3 | sort)
    echo "dkms tree after the purge:"
    echo "$after"
    echo "status before: $before"
}

############################## scenario ##############################

# The scenario is one function, called on the file's last line together with exit: bash reads a
# script while it runs it, so an edit of this file during a run (a merge, an editor saving in
# place) would make the running shell resume at an offset that no longer starts a line. A run
# of 2026-12-02 ended that way after its last step: the file had shrunk by 422 bytes, so the
# shell found end-of-file where the TOTAL line had been and stopped with status 0 before the
# summary ("the run ended early (exit 0) during step purge").
scenario() {
    T0=$(date +%s)
    step host s_host
    step package s_package
    if ok host package; then
        step bootstrap s_bootstrap
    else
        skip bootstrap "needs the host tools and the packages"
    fi
    if ok bootstrap; then
        step base s_base
    else
        skip base "needs the chroot"
    fi
    if ok base; then
        step modules s_modules
        step kernel2 s_kernel2
        if [ -n "${K2:-}" ]; then
            step initrd s_initrd
        else
            skip initrd "needs the second kernel"
        fi
        step qemu s_qemu
        step switch s_switch
        step purge s_purge
    else
        for s in modules kernel2 initrd qemu switch purge; do skip "$s" "needs the base system"; done
    fi
    STEP="the end (after the last step)"
    printf 'TOTAL\t%s\t-\n' "$(($(date +%s) - T0))" >>"$TIMES"
    SUMMARY_DONE=1
    summary
}

scenario "$@"; exit $?

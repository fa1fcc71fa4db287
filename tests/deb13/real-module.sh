#!/usr/bin/env bash
# Builds examples/hello-dkms with rdkms in a Debian 13 (trixie) chroot against its real 6.12
# headers and checks what the kernel expects there: hello.ko.xz (CRC32, 1 MiB dictionary),
# signed (sha256) with a MOK pair rdkms made itself, while any xz/zstd/gzip/openssl command it
# might spawn is a trap that fails and records the call. Then status with the '+' kernel
# version and kernel_preinst. Root; self-provisioning: debootstraps the chroot from the mirror
# the host's apt uses, keeping it as a tar in CACHE (reused for a week).
#
#   tests/deb13/real-module.sh        # RDKMS_BIN=path/to/rdkms to skip the cargo build
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${CACHE:-/var/tmp/rdkms-deb13src-cache}
WORK=$(mktemp -d /var/tmp/rdkms-deb13-real.XXXXXX)
T=$WORK/root
pass=0 fail=0
check() { # NAME COMMAND...
    local name=$1; shift
    if "$@" >"$WORK/out" 2>&1; then echo "PASS $name"; pass=$((pass + 1));
    else echo "FAIL $name"; sed 's/^/    /' "$WORK/out"; fail=$((fail + 1)); fi
}
cleanup() { umount "$T/proc" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

[ "$(id -u)" = 0 ] || { echo "real-module.sh: needs root (debootstrap, chroot)" >&2; exit 1; }
mirror() { # the first Debian archive URI the host's apt uses
    { cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/{print $2}'
      cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
          awk '$1=="deb"{for(i=2;i<=NF;i++) if ($i ~ /^https?:/) {print $i; break}}'
    } | grep -v -- -security | head -n1
}
# The configured chroot is cached as a plain tar: unpacking a debootstrap tarball would run
# its whole second stage again (~6 min here); extracting the tar takes seconds.
cached=$CACHE/trixie-root.tar
mkdir -p "$CACHE"
if [ ! -f "$cached" ] || [ -n "$(find "$cached" -mtime +7)" ]; then
    echo "provisioning $cached from $(mirror)"
    debootstrap --variant=minbase --include=linux-headers-amd64,build-essential,kmod,xz-utils,zstd \
        trixie "$WORK/prov" "$(mirror)" >"$CACHE/debootstrap.log" 2>&1
    tar -C "$WORK/prov" -cf "$cached.new" . && mv "$cached.new" "$cached"
    rm -rf "$WORK/prov"
fi
t0=$(date +%s)
mkdir -p "$T" && tar -C "$T" -xf "$cached"
echo "chroot unpacked in $(( $(date +%s) - t0 )) s"

if [ -z "${RDKMS_BIN:-}" ]; then
    (cd "$repo" && cargo build --release --quiet)
    RDKMS_BIN=$repo/target/release/rdkms
fi
install -m 0755 "$RDKMS_BIN" "$T/usr/local/sbin/rdkms"
cp -a "$repo/examples/hello-dkms" "$T/usr/src/hello-1.0"
mkdir -p "$T/proc" "$T/trap"
mount -t proc proc "$T/proc"
for tool in xz zstd gzip openssl; do
    printf '#!/bin/sh\necho "$0 $*" >>/trap/called\nexit 1\n' >"$T/trap/$tool"
    chmod +x "$T/trap/$tool"
done
K=$(basename "$(ls -d "$T"/usr/src/linux-headers-*-amd64 | head -n1)")
K=${K#linux-headers-}
in_root() { chroot "$T" env PATH=/trap:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin "$@"; }
ko=/lib/modules/$K/updates/dkms/hello.ko.xz

echo "kernel $K"
t0=$(date +%s)
check "rdkms install hello/1.0 -k $K/x86_64" in_root rdkms install hello/1.0 -k "$K/x86_64"
echo "install took $(( $(date +%s) - t0 )) s"
check "no compressor or openssl command was run" test ! -e "$T/trap/called"
check "installed as hello.ko.xz" test -f "$T$ko"
check "xz -t accepts it" chroot "$T" xz -t "$ko"
check "xz stream: CRC32 check, 1 MiB dictionary" \
    sh -c "chroot '$T' xz -lvv '$ko' | grep -q 'CRC32.*--lzma2=dict=1MiB'"
check "modinfo -F signer = DKMS module signing key" \
    sh -c "[ \"\$(chroot '$T' modinfo -F signer '$ko')\" = 'DKMS module signing key' ]"
check "modinfo -F sig_hashalgo = sha256" \
    sh -c "[ \"\$(chroot '$T' modinfo -F sig_hashalgo '$ko')\" = sha256 ]"
check "modinfo -F vermagic starts with $K" \
    sh -c "chroot '$T' modinfo -F vermagic '$ko' | grep -q '^$K '"
check "mok.key is private" sh -c "[ \"\$(stat -c %a '$T/var/lib/dkms/mok.key')\" = 600 ]"
check "status shows the + kernel" \
    sh -c "[ \"\$(chroot '$T' rdkms status)\" = 'hello/1.0, $K, x86_64: installed' ]"
check "status --json names the + kernel" \
    sh -c "chroot '$T' rdkms status --json | grep -q '\"kernel\": \"$K\"'"
check "kernel_preinst --hook unbuilds it, nothing on stdout" \
    sh -c "[ -z \"\$(chroot '$T' rdkms kernel_preinst --hook -k '$K' 2>/dev/null)\" ] && [ ! -e '$T$ko' ]"
check "kernel_postinst --hook builds it again" \
    sh -c "chroot '$T' rdkms kernel_postinst --hook -k '$K' && [ -f '$T$ko' ]"
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]

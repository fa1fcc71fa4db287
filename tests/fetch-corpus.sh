#!/usr/bin/env bash
# Downloads real *-dkms packages from the Debian archive (apt-get download) and extracts their
# /usr/src trees into tests/corpus/work/, for the corpus and real-build tests. Idempotent.
set -euo pipefail
cd "$(dirname "$0")"
PKGS=(acpi-call-dkms adv-17v35x-dkms bbswitch-dkms dahdi-dkms ddcci-dkms digimend-dkms dm-writeboost-dkms
      dpdk-kmods-dkms evdi-dkms falcosecurity-scap-dkms gost-crypto-dkms iptables-netflow-dkms
      jool-dkms langford-dkms librem-ec-acpi-dkms vpoll-dkms lime-forensics-dkms apfs-dkms
      lttng-modules-dkms nat-rtsp-dkms openafs-modules-dkms openrazer-driver-dkms openvpn-dco-dkms
      rapiddisk-dkms rtpengine-kernel-dkms tp-smapi-dkms v4l2loopback-dkms west-chamber-dkms
      xtables-addons-dkms xtrx-dkms)
out=corpus/work
mkdir -p "$out/debs" "$out/src"
cd "$out/debs"
missing=()
for p in "${PKGS[@]}"; do
    ls "${p}"_*.deb >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
    # A package absent from this archive is skipped; the tests count what they got.
    for p in "${missing[@]}"; do
        apt-get download -q "$p" >/dev/null 2>&1 || echo "fetch-corpus: $p not available, skipped" >&2
    done
fi
for deb in *.deb; do
    [ -e "$deb" ] || continue
    stamp="../src/.${deb}.done"
    [ -e "$stamp" ] && continue
    tmp=$(mktemp -d)
    dpkg-deb -x "$deb" "$tmp"
    if [ -d "$tmp/usr/src" ]; then
        cp -a "$tmp/usr/src/." ../src/
    fi
    rm -rf "$tmp"
    touch "$stamp"
done

#!/usr/bin/env bash
# Builds and installs examples/hello-dkms with the real rdkms binary for the newest kernel whose
# headers are installed, inside a throw-away sandbox root (nothing on the machine changes), then
# prints `status` and `status --json`. Usage: examples/demo.sh [KVER]
set -euo pipefail
cd "$(dirname "$0")/.."

kernel=${1:-}
if [[ -z $kernel ]]; then
    kernel=$(for build in /lib/modules/*/build; do
        [[ -f $build/Makefile ]] && basename "$(dirname "$build")"
    done | sort -V | tail -n 1)
fi
if [[ -z $kernel || ! -f /lib/modules/$kernel/build/Makefile ]]; then
    echo "demo: no kernel headers found; install them first: apt-get install linux-headers-amd64" >&2
    exit 21
fi

cargo build --release --quiet
rdkms=$PWD/target/release/rdkms
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT

mkdir -p "$root/usr/src" "$root/lib/modules/$kernel"
ln -s "$(readlink -f "/lib/modules/$kernel/build")" "$root/lib/modules/$kernel/build"
cp -a examples/hello-dkms "$root/usr/src/hello-1.0"

set -x
"$rdkms" --root "$root" install hello/1.0 -k "$kernel"
"$rdkms" --root "$root" status
"$rdkms" --root "$root" status --json

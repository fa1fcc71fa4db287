#!/usr/bin/env bash
# The README's test command: every test tier. Real-tier tests need root, real kernel headers
# (linux-headers-amd64), make and Debian's dkms; .ci/run installs them.
set -euo pipefail
cd "$(dirname "$0")/.."
tests/fetch-corpus.sh
cargo test --release "$@"

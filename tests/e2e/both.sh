#!/usr/bin/env bash
# The end-to-end test on Debian 12 and Debian 13 at the same time, as CI runs it: each run
# waits mostly on apt, dpkg and QEMU, so side by side they take little longer than one. The .deb
# is built once (tests/e2e/build-deb.sh; a lintian error fails here); each run has its own WORK
# and apt archive cache. Debian 12's log comes live, Debian 13's after it; one count line each,
# then both exit statuses. Exit 0 when both passed.
#
#   sudo tests/e2e/both.sh          # LIMIT: seconds for each run (default 2400)
set -euo pipefail

# One function called together with exit on the last line, so that an edit of this file
# during a run cannot change what the running shell reads next (see run.sh).
main() {
    local here limit start trixie_pid bookworm_rc=0 trixie_rc=0
    here=$(cd "$(dirname "$0")" && pwd)
    limit=${LIMIT:-2400}
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT

    "$here/build-deb.sh" "$tmp/deb"
    RDKMS_DEB=$(ls "$tmp"/deb/rdkms_*.deb)
    export RDKMS_DEB
    start=$(date +%s)
    SUITE=trixie WORK=/var/tmp/rdkms-e2e-trixie timeout --kill-after=60 "$limit" "$here/run.sh" \
        >"$tmp/trixie.log" 2>&1 &
    trixie_pid=$!
    SUITE=bookworm WORK=/var/tmp/rdkms-e2e timeout --kill-after=60 "$limit" "$here/run.sh" ||
        bookworm_rc=$?
    wait "$trixie_pid" || trixie_rc=$?
    echo "=== tests/e2e/run.sh with SUITE=trixie (Debian 13), run alongside the one above:"
    cat "$tmp/trixie.log"
    echo "e2e: Debian 12 exit $bookworm_rc, Debian 13 exit $trixie_rc, both in $(($(date +%s) - start)) s"
    [ "$bookworm_rc" = 0 ] && [ "$trixie_rc" = 0 ]
}

main "$@"; exit $?

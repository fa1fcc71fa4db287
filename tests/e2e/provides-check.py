#!/usr/bin/env python3
"""Checks a `Provides: dkms (= V)` against every relation on `dkms` in apt Packages indexes.

    tests/e2e/provides-check.py VERSION PACKAGES_FILE...

Prints, per index, how many Depends/Pre-Depends a provider of VERSION satisfies and which
Breaks/Conflicts would hit it, judging versions with `dpkg --compare-versions` (so the answer
is dpkg's, not a re-implementation). Exit 1 when any Depends on dkms is not satisfied.
"""
import re
import subprocess
import sys

OPS = {"<<": "lt", "<=": "le", "=": "eq", ">=": "ge", ">>": "gt"}
ALT = re.compile(r"^\s*dkms(?::any)?\s*(?:\(\s*(<<|<=|=|>=|>>)\s*([^)\s]+)\s*\))?\s*$")


def paragraphs(path):
    # apt keeps its lists compressed (lz4 on Debian 12); apt-helper reads every form apt writes.
    text = subprocess.run(
        ["/usr/lib/apt/apt-helper", "cat-file", path], check=True, capture_output=True
    ).stdout.decode("utf-8", "replace")
    for block in text.split("\n\n"):
        fields, last = {}, None
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and last:
                fields[last] += " " + line.strip()
            elif ":" in line:
                last, _, value = line.partition(":")
                fields[last] = value.strip()
        if "Package" in fields:
            yield fields


def holds(version, op, wanted):
    """dpkg's verdict on `version op wanted`."""
    return subprocess.run(["dpkg", "--compare-versions", version, OPS[op], wanted]).returncode == 0


def main():
    version, files = sys.argv[1], sys.argv[2:]
    unsatisfied = 0
    for path in files:
        deps = ok = 0
        seen = set()
        for p in paragraphs(path):
            key = (p["Package"], p.get("Version"))
            if key in seen:
                continue
            seen.add(key)
            for field in ("Depends", "Pre-Depends", "Breaks", "Conflicts"):
                for clause in p.get(field, "").split(","):
                    alts = [ALT.match(a) for a in clause.split("|")]
                    hits = [m for m in alts if m]
                    if not hits:
                        continue
                    sat = any(m.group(1) is None or holds(version, m.group(1), m.group(2)) for m in hits)
                    name = f"{p['Package']} {p.get('Version')}"
                    if field in ("Depends", "Pre-Depends"):
                        deps += 1
                        ok += sat
                        if not sat:
                            unsatisfied += 1
                            print(f"  NOT SATISFIED: {name}: {field}: {clause.strip()}")
                    elif sat:
                        print(f"  would be hit: {name}: {field}: {clause.strip()}")
        print(f"{path}: dkms (= {version}) satisfies {ok} of {deps} Depends on dkms")
    return 1 if unsatisfied else 0


if __name__ == "__main__":
    sys.exit(main())

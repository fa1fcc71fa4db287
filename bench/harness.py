"""The side-by-side benchmark of rdkms and Debian's dkms (issue 8). Started by bench/run inside
a private mount namespace. For every case it builds one sandbox state twice (sandbox.py), runs
both tools on it interleaved (dkms once, then a share of the rdkms repetitions, alternating who
goes first), checks that both did the same thing, and writes bench/results/DATE-HOST.{json,md}
(report.py)."""

import argparse
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import measure  # noqa: E402
import report  # noqa: E402
import sandbox  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "tests/corpus/work/src"
HELLO = REPO / "examples/hello-dkms"
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

# The three corpus packages that do not compile against the Debian 12 headers
# (docs/dkms-baseline.md); the baseline's 27-module figures are for the others.
FAILING = {"librem_ec_acpi", "lttng-modules", "openrazer-driver"}

# Real packages built in the new-kernel case without --full: small, quick, plain kbuild.
BUILD_SET = ["vpoll", "acpi-call", "bbswitch", "tp_smapi", "nat-rtsp", "v4l2loopback"]

DEBIAN_POSTINST = "/etc/kernel/postinst.d/dkms"
DEBIAN_PRERM = "/etc/kernel/prerm.d/dkms"

MODES = {
    # states: (N, kernels); "27r" is the 27 real corpus packages, installed.
    "quick": dict(states=[(5, 1)], apt_states=[(5, 1)], dkms_reps=1, rdkms_reps=5,
                  build_reps=1, build_set=[], status_pairs=10, hook_pairs=10,
                  prerm_states=[(5, 1)], prerm_pairs=10, rdkms_cap=3.0),
    "default": dict(states=[("27r", 1), ("27r", 3), (100, 1), (100, 3), (1000, 1), (1000, 3)],
                    apt_states=[(10, 1), ("27r", 1), (100, 1), (1000, 1), (1000, 3)],
                    dkms_reps=3, rdkms_reps=30, build_reps=2, build_set=BUILD_SET,
                    status_pairs=100, hook_pairs=300,
                    prerm_states=[("27r", 1), ("27r", 3), (1000, 3)], prerm_pairs=81,
                    rdkms_cap=15.0),
    "full": dict(states=[("27r", 1), ("27r", 3), (100, 1), (100, 3), (1000, 1), (1000, 3)],
                 apt_states=[(10, 1), ("27r", 1), (100, 1), (1000, 1), (1000, 3)],
                 dkms_reps=5, rdkms_reps=50, build_reps=2, build_set=None,
                 status_pairs=300, hook_pairs=300,
                 prerm_states=[("27r", 1), ("27r", 3), (1000, 3)], prerm_pairs=81,
                 rdkms_cap=30.0),
}


class Tool:
    """How one tool runs in a case: its command, environment, accepted exit codes, what to do
    before each run (untimed), and whether to sample its own peak RSS while it runs."""

    def __init__(self, argv, env=None, ok=(0,), before=None, poll_hwm=False):
        self.argv = [str(a) for a in argv]
        self.env = {"PATH": PATH, "HOME": "/root", **(env or {})}
        self.ok = ok
        self.before = before
        self.poll_hwm = poll_hwm


class Bench:
    """Everything shared by the cases: binaries, kernels, scratch space, template module."""

    def __init__(self, args):
        self.args = args
        self.mode = MODES[args.mode]
        self.rdkms = str(Path(args.rdkms).resolve())
        self.scratch = Path(tempfile.mkdtemp(prefix="rdkms-bench-", dir=args.tmpdir))
        self.runs_dir = self.scratch / "runs"
        self.runs_dir.mkdir()
        self.kernel, self.headers = find_kernel(args.kernel)
        self.kernels = [self.kernel] + sibling_kernels(self.kernel, 2)
        self.mounts = sandbox.Mounts()
        self.cases = []
        self.notes = []
        self.dkms_ok = shutil.which("dkms") is not None and Path(DEBIAN_POSTINST).exists()
        if not self.dkms_ok:
            self.notes.append("Debian's dkms or its kernel hooks are missing: dkms columns empty.")
        self.states = {}
        self.template_ko, self.mok = self.make_template()
        self.apt_line = apt_line()

    def wants(self, kind):
        return kind in self.args.only.split(",")

    def log(self, msg):
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    def make_template(self):
        """Builds examples/hello-dkms once with rdkms against the real headers: its signed module
        file (compressed as the kernel's own) is copied as every module file of the generated
        states, and its MOK is shared by all trees (so no tool generates a key inside a timed run)."""
        root = sandbox.Root(self.scratch / "template", [self.kernel], self.headers).create()
        shutil.copytree(HELLO, root.src / "hello-1.0")
        out = subprocess.run(
            [self.rdkms, "build", "hello/1.0", "-k", self.kernel, "--root", str(root.path)],
            capture_output=True, text=True,
        )
        # Stored as the kernel stores its modules: hello.ko.xz for Debian 13's kernels.
        kos = sorted((root.tree / f"hello/1.0/{self.kernel}/{sandbox.ARCH}/module").glob("hello.ko*"))
        if out.returncode != 0 or not kos:
            sys.exit(f"bench: building examples/hello-dkms failed:\n{out.stdout}{out.stderr}")
        return kos[0], root.tree

    # ----- states -----

    def packages(self, n, kernels):
        if n == "27r":
            pkgs = []
            for d in sorted(CORPUS.iterdir()):
                if not d.is_dir():
                    continue
                p = sandbox.real(self.rdkms, d, kernels, self.scratch / "template")
                if p and p.name not in FAILING:
                    pkgs.append(p)
            return pkgs
        return [sandbox.synthetic(i, kernels) for i in range(n)]

    def state(self, n, nk):
        """(dkms root, rdkms root, packages) with N packages installed on nk kernels."""
        key = (n, nk)
        if key not in self.states:
            kernels = self.kernels[:nk]
            pkgs = self.packages(n, kernels)
            roots = []
            for side in ("dkms", "rdkms"):
                r = sandbox.Root(self.scratch / f"s-{n}-{nk}-{side}", kernels, self.headers)
                r.create(self.mok)
                for p in pkgs:
                    r.write(p, kernels, self.template_ko)
                roots.append(r)
            # Flush the setup's writes now, so their writeback does not land in timed runs.
            os.sync()
            self.states[key] = (roots[0], roots[1], pkgs)
        return self.states[key]

    # ----- running -----

    def compare(self, case, tools, dkms_reps, rdkms_reps, check=None, warmup=True, each_round=None):
        """Runs the case's tools interleaved and records the case; each_round (untimed by the
        tools' figures) runs once per round after them."""
        case["load1"] = os.getloadavg()[0]
        series = {name: measure.Series() for name in tools}
        reps = {"dkms": dkms_reps if "dkms" in tools else 0, "rdkms": rdkms_reps}
        rounds = max(reps["dkms"], 1)
        per_round = math.ceil(reps["rdkms"] / rounds)
        if warmup and "rdkms" in tools:
            self.one(tools["rdkms"], series["rdkms"], record=False)
        spent = 0.0
        for i in range(rounds):
            order = ["dkms", "rdkms"] if i % 2 == 0 else ["rdkms", "dkms"]
            for name in order:
                if name not in tools or series[name].status != "ok":
                    continue
                if name == "dkms":
                    if len(series[name].runs) < reps["dkms"]:
                        self.one(tools[name], series[name])
                    continue
                for _ in range(per_round):
                    if len(series[name].runs) >= reps["rdkms"]:
                        break
                    if spent > self.mode["rdkms_cap"] and len(series[name].runs) >= 5:
                        break
                    r = self.one(tools[name], series[name])
                    spent += r.wall if r else 0
            if each_round:
                each_round()
        return self.finish(case, tools, series, check)

    def finish(self, case, tools, series, check):
        """Peak RSS runs, summaries, the check and the targets; records the case."""
        if "rdkms" in tools and series["rdkms"].status == "ok" and not tools["rdkms"].poll_hwm:
            self.rss(tools["rdkms"], series["rdkms"])
        case["dkms"] = series["dkms"].summary() if "dkms" in tools else {"status": case.pop("dkms_skip", "not run")}
        case["rdkms"] = series["rdkms"].summary()
        case["dkms_cmd"] = " ".join(tools["dkms"].argv) if "dkms" in tools else None
        case["rdkms_cmd"] = " ".join(tools["rdkms"].argv)
        d, r = series.get("dkms"), series["rdkms"]
        if d and d.runs and r.runs:
            case["ratio"] = d.median() / r.median()
        failed = [n for n, x in series.items() if x.status != "ok"]
        if failed:
            case["check"] = f"not checked: {', '.join(failed)} failed"
        elif check:
            case["check"] = check(series)
        report.judge(case)
        self.cases.append(case)
        self.log(report.line(case))
        return series

    def one(self, tool, series, record=True):
        if tool.before:
            tool.before()
        r = measure.spawn(tool.argv, tool.env, str(self.runs_dir), poll_hwm=tool.poll_hwm)
        if r.rc not in tool.ok:
            last = (r.err.strip().splitlines() or r.out.strip().splitlines() or [""])[-1]
            series.status = f"error: exit {r.rc}: {last[:200]}"
            return None
        if record:
            series.runs.append(r)
        return r

    def rss(self, tool, series, reps=3):
        """A few extra, untimed runs under GNU time for the peak RSS."""
        for _ in range(reps):
            if tool.before:
                tool.before()
            got = measure.peak_rss(tool.argv, tool.env, str(self.runs_dir))
            if got is None:
                return
            series.rss_kib.append(got[0])

    def dkms_allowed(self, n, nk, limit_key):
        if not self.dkms_ok:
            return False
        pairs = (27 if n == "27r" else n) * nk
        return pairs <= self.mode[limit_key]

    def rdkms_env(self, root):
        return {"RDKMS_ROOT": str(root.path), "RDKMS_BIN": self.rdkms}

    # ----- cases -----

    def run_state_cases(self, n, nk):
        rd, rr, pkgs = self.state(n, nk)
        pairs = sum(1 for p in pkgs for k in rr.kernels if p.kos.get(k))
        base = {"n": n, "kernels": nk, "pairs": pairs}
        show = lambda: self.mounts.show(rd)  # noqa: E731
        if self.wants("status"):
            self.status_case(base, rd, rr, pairs, show)
        if self.wants("autoinstall"):
            self.autoinstall_case(base, rd, rr, show)
        if self.wants("postinst"):
            self.postinst_case(base, rd, rr, show)

    def status_case(self, base, rd, rr, pairs, show):
        """1. `status` of every module; both must print the same lines, all `installed`."""
        n, nk = base["n"], base["kernels"]
        tools = {"rdkms": Tool([self.rdkms, "status", "--root", rr.path])}
        case = {"kind": "status", **base}
        if self.dkms_allowed(n, nk, "status_pairs"):
            tools["dkms"] = Tool(["dkms", "status"], before=show)
        else:
            case["dkms_skip"] = skip_note(self, "status_pairs")
        self.compare(case, tools, self.mode["dkms_reps"], self.mode["rdkms_reps"],
                     check=lambda s: check_status(s, pairs))

    def autoinstall_case(self, base, rd, rr, show):
        """2. no-op `autoinstall -k K`: everything is installed already."""
        n, nk, k1 = base["n"], base["kernels"], self.kernel
        before = (tree_stamp(rd), tree_stamp(rr))
        tools = {"rdkms": Tool([self.rdkms, "autoinstall", "-k", k1, "--root", rr.path])}
        case = {"kind": "autoinstall-noop", **base}
        if self.dkms_allowed(n, nk, "hook_pairs"):
            tools["dkms"] = Tool(["dkms", "autoinstall", "-k", k1], before=show)
        else:
            case["dkms_skip"] = skip_note(self, "hook_pairs")
        self.compare(case, tools, self.mode["dkms_reps"], self.mode["rdkms_reps"],
                     check=lambda s: check_unchanged(before, rd, rr))

    def postinst_case(self, base, rd, rr, show):
        """4. the kernel postinst hook with nothing to do: Debian's postinst.d/dkms
        (dkms_autoinstaller start K -> dkms autoinstall --kernelver K) against rdkms's hook."""
        n, nk, k1 = base["n"], base["kernels"], self.kernel
        before = (tree_stamp(rd), tree_stamp(rr))
        tools = {"rdkms": Tool([REPO / "kernel-postinst.d/dkms", k1], env=self.rdkms_env(rr))}
        case = {"kind": "postinst-noop", **base}
        if self.dkms_allowed(n, nk, "hook_pairs"):
            tools["dkms"] = Tool([DEBIAN_POSTINST, k1], before=show)
        else:
            case["dkms_skip"] = skip_note(self, "hook_pairs")
        self.compare(case, tools, self.mode["dkms_reps"], self.mode["rdkms_reps"],
                     check=lambda s: check_unchanged(before, rd, rr))

    def run_apt_cases(self, states):
        """3. apt's DPkg::Post-Invoke when nothing changed: rdkms only (dkms has no such hook),
        for every N interleaved run by run, so that the machine's noise falls on all N alike.
        One full reconcile first stores each fingerprint; the timed runs must find it current."""
        cases = []
        for n, nk in states:
            _, rr, _ = self.state(n, nk)
            env = {"RDKMS_ROOT": str(rr.path)}
            check = self.prime_apt(rr, env)
            base = {"n": n, "kernels": nk, "load1": os.getloadavg()[0],
                    "dkms_skip": "no equivalent (Debian's dkms has no apt hook)"}
            cases.append(({"kind": "apt-noop", **base},
                          Tool([self.rdkms, "reconcile", "--from-apt"], env=env), check))
            if self.apt_line:
                line = self.apt_line.replace("/usr/sbin/rdkms", self.rdkms)
                cases.append(({"kind": "apt-noop-sh", **base}, Tool(["sh", "-c", line], env=env),
                              check))
        series = [measure.Series() for _ in cases]
        for (_, tool, _), ser in zip(cases, series):
            self.one(tool, ser, record=False)
        for rep in range(self.mode["rdkms_reps"] * 2):
            for i in range(len(cases)):
                j = (i + rep) % len(cases)
                if series[j].status == "ok":
                    self.one(cases[j][1], series[j])
        for (case, tool, check), ser in zip(cases, series):
            self.finish(case, {"rdkms": tool}, {"rdkms": ser}, check)

    def prime_apt(self, rr, env):
        """Stores the fingerprint with one reconcile; returns the check that it stayed."""
        fp = rr.tree / ".rdkms-fingerprint"
        # A fingerprint is only stored once the watched directories are 2 s old.
        age = time.time() - max(p.stat().st_mtime for p in (rr.tree, rr.path / "lib/modules", rr.src))
        if age < 2.1:
            time.sleep(2.1 - age)
        # The priming run's own writes may make the tree too fresh to trust: then wait, retry.
        for _ in range(3):
            prime = measure.spawn([self.rdkms, "reconcile", "--from-apt"], {"PATH": PATH, **env},
                                  str(self.runs_dir))
            if fp.exists() and fp.read_text().startswith("rdkms-fingerprint-"):
                break
            time.sleep(2.1)
        primed = f"priming reconcile exit {prime.rc}" + (
            f": {prime.err.strip().splitlines()[-1][:200]}" if prime.rc and prime.err.strip() else "")
        stamp = fp.stat().st_mtime_ns if fp.exists() else None

        def check(_s):
            if stamp is None:
                return f"no fingerprint stored ({primed})"
            if fp.stat().st_mtime_ns != stamp:
                return "fingerprint rewritten: the timed runs were not no-ops"
            return "ok"

        return check

    def run_prerm_case(self, n, nk):
        """6. kernel removal: Debian's prerm.d/dkms (status -k K, then dkms remove -k K per
        installed module, each with its depmod) against rdkms's hook. Each run gets a fresh copy
        of the state."""
        rd0, rr0, _ = self.state(n, nk)
        k = rr0.kernels[-1]
        work = {"dkms": self.scratch / "prerm-dkms", "rdkms": self.scratch / "prerm-rdkms"}
        holder = {}

        def reset_d():
            self.mounts.hide()
            holder["dkms"] = rd0.copy_to(work["dkms"])
            self.mounts.show(holder["dkms"])

        def reset_r():
            holder["rdkms"] = rr0.copy_to(work["rdkms"])

        tools = {"rdkms": Tool([REPO / "hooks/prerm.d/dkms", k],
                               env={"RDKMS_ROOT": str(work["rdkms"]), "RDKMS_BIN": self.rdkms},
                               before=reset_r)}
        case = {"kind": "prerm", "n": n, "kernels": nk, "removed_kernel": k}
        if self.dkms_allowed(n, nk, "prerm_pairs") and Path(DEBIAN_PRERM).exists():
            tools["dkms"] = Tool([DEBIAN_PRERM, k], before=reset_d)
        else:
            case["dkms_skip"] = skip_note(self, "prerm_pairs")

        def check(_s):
            left = {side: r.installed_files(k) for side, r in holder.items()}
            bad = {side: len(files) for side, files in left.items() if files}
            return "ok" if not bad else f"module files left in lib/modules/{k}/updates: {bad}"

        self.compare(case, tools, max(self.mode["dkms_reps"], 1), min(self.mode["rdkms_reps"], 10),
                     check=check, warmup=False)
        self.mounts.hide()

    def run_newkernel_case(self):
        """5. a new kernel: every AUTOINSTALL module of the set, only registered so far, built
        and installed by the kernel's postinst hook; compared with the physical limit measured
        by building each module alone (rdkms build, make -jNPROC)."""
        names = self.mode["build_set"]
        dirs = sorted(d for d in CORPUS.iterdir() if d.is_dir()) if CORPUS.is_dir() else []
        if names is not None:
            dirs = [d for d in dirs if any(d.name.startswith(x + "-") for x in names)]
        pkgs = [sandbox.real(self.rdkms, HELLO, [self.kernel], self.scratch / "template")]
        for d in dirs:
            p = sandbox.real(self.rdkms, d, [self.kernel], self.scratch / "template")
            if p and p.autoinstall:
                pkgs.append(p)
        k = self.kernel
        pristine = sandbox.Root(self.scratch / "nk-pristine", [k], self.headers).create(self.mok)
        pristine.add_image(k, self.template_ko)
        for p in pkgs:
            pristine.write(p, [], self.template_ko)
        calib = {"rounds": []}
        holder = {}

        def reset_d():
            self.mounts.hide()
            holder["dkms"] = pristine.copy_to(self.scratch / "nk-dkms")
            self.mounts.show(holder["dkms"])

        def reset_r():
            holder["rdkms"] = pristine.copy_to(self.scratch / "nk-rdkms")

        tools = {"rdkms": Tool([REPO / "kernel-postinst.d/dkms", k], before=reset_r, poll_hwm=True,
                               env={"RDKMS_ROOT": str(self.scratch / "nk-rdkms"),
                                    "RDKMS_BIN": self.rdkms})}
        if self.dkms_ok:
            tools["dkms"] = Tool([DEBIAN_POSTINST, k], before=reset_d, ok=(0, 11))

        def check(_s):
            files = {side: set(r.installed_files(k)) for side, r in holder.items()}
            if len(files) == 2 and files["dkms"] != files["rdkms"]:
                only = {s: sorted(files[s] - files[o])[:5] for s, o in (("dkms", "rdkms"), ("rdkms", "dkms"))}
                return f"installed files differ: {only}"
            return "ok"

        case = {"kind": "newkernel", "n": len(pkgs), "kernels": 1,
                "packages": [p.dirname for p in pkgs], "calibration": calib}
        reps = self.mode["build_reps"]
        self.mounts.hide()
        self.compare(case, tools, reps, reps, check=check, warmup=False,
                     each_round=lambda: calib["rounds"].append(self.calibrate(pkgs)))
        calib.update(physical_limit(calib["rounds"]))
        report.judge(case)
        self.mounts.hide()

    def calibrate(self, pkgs):
        """Each module built alone by `rdkms build` (make -jNPROC), one after the other: wall
        and CPU time (the build's whole process tree) per module. Then all of them at once,
        each in its own root (no tree lock between them, no shared jobserver): the wall time
        building independent modules concurrently reaches with today's per-module build."""
        self.mounts.hide()
        env = {"PATH": PATH, "HOME": "/root"}
        out = {"modules": {}}
        for p in pkgs:
            root = self.calib_root(p, "calib")
            r = measure.spawn(self.build_argv(p, root), env, str(self.runs_dir))
            out["modules"][p.dirname] = {"wall_s": r.wall, "cpu_s": r.cpu, "rc": r.rc}
            self.log(f"calibration {p.dirname}: {r.wall:.2f} s wall, {r.cpu:.2f} s cpu, exit {r.rc}")
        roots = [self.calib_root(p, f"calib-{i}") for i, p in enumerate(pkgs)]
        t0 = time.perf_counter()
        procs = [subprocess.Popen(self.build_argv(p, r), env=env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for p, r in zip(pkgs, roots)]
        rcs = [pr.wait() for pr in procs]
        out["concurrent_wall_s"] = time.perf_counter() - t0
        out["concurrent_failed"] = [p.dirname for p, rc in zip(pkgs, rcs) if rc != 0]
        self.log(f"calibration, all {len(pkgs)} at once: {out['concurrent_wall_s']:.2f} s wall")
        for d in self.scratch.glob("calib*"):
            shutil.rmtree(d, ignore_errors=True)
        return out

    def calib_root(self, pkg, name):
        root = sandbox.Root(self.scratch / name, [self.kernel], self.headers)
        if root.path.exists():
            shutil.rmtree(root.path)
        root.create(self.mok)
        root.add_image(self.kernel, self.template_ko)
        root.write(pkg, [], self.template_ko)
        return root

    def build_argv(self, pkg, root):
        return [self.rdkms, "build", f"{pkg.name}/{pkg.version}", "-k", self.kernel,
                "--root", str(root.path)]

    def run(self):
        self.floor = measure.spawn_floor(str(self.runs_dir))
        started = time.time()
        load0 = os.getloadavg()
        per_state = any(self.wants(k) for k in ("status", "autoinstall", "postinst"))
        for n, nk in self.mode["states"] if per_state else []:
            self.log(f"state N={n} kernels={nk}")
            self.run_state_cases(n, nk)
        if self.wants("apt"):
            self.run_apt_cases(self.mode["apt_states"])
        for n, nk in self.mode["prerm_states"] if self.wants("prerm") else []:
            self.run_prerm_case(n, nk)
        if self.wants("newkernel"):
            self.run_newkernel_case()
        self.mounts.hide()
        meta = report.machine(self.kernel, self.rdkms, REPO)
        meta.update(mode=self.args.mode, duration_s=round(time.time() - started),
                    load_start=load0, load_end=os.getloadavg(),
                    spawn_floor_s=self.floor, notes=self.notes, kernels=self.kernels)
        paths = report.write(meta, self.cases, Path(self.args.out))
        for p in paths:
            print(p)
        print(report.markdown(meta, self.cases))
        return report.problems(self.cases)


def physical_limit(rounds):
    """The new-kernel case's lower bound from the calibration rounds (per module, the median
    over rounds): the longest single build, or the summed CPU time spread over every core,
    whichever is larger. Modules that failed to build in any round are left out."""
    if not rounds:
        return {}
    conc = [r["concurrent_wall_s"] for r in rounds]
    rounds = [r["modules"] for r in rounds]
    names = rounds[0].keys()
    failed = sorted(n for n in names if any(r[n]["rc"] != 0 for r in rounds))
    ok = [n for n in names if n not in failed]
    wall = {n: statistics.median(r[n]["wall_s"] for r in rounds) for n in ok}
    cpu = {n: statistics.median(r[n]["cpu_s"] for r in rounds) for n in ok}
    out = {"failed": failed, "cores": len(os.sched_getaffinity(0)),
           "concurrent_wall_s": statistics.median(conc)}
    if ok:
        out["longest_wall_s"] = max(wall.values())
        out["longest"] = max(wall, key=wall.get)
        out["cpu_sum_s"] = sum(cpu.values())
        out["serial_wall_sum_s"] = sum(wall.values())
        out["limit_s"] = max(out["longest_wall_s"], out["cpu_sum_s"] / out["cores"])
    return out


def find_kernel(wanted):
    """The kernel whose real headers builds use: -k, else the newest /lib/modules/K/build."""
    base = Path("/lib/modules")
    cands = [wanted] if wanted else sorted(
        (p.name for p in base.iterdir() if (p / "build/Makefile").exists()),
        key=lambda s: [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", s)])
    if not cands or not (base / cands[-1] / "build/Makefile").exists():
        sys.exit("bench: no kernel headers in /lib/modules/*/build (apt-get install linux-headers-amd64)")
    k = cands[-1]
    return k, Path(os.path.realpath(base / k / "build"))


def sibling_kernels(k, count):
    """Names for extra kernels sharing K's headers: the ABI number counted down (6.1.0-55-amd64)."""
    m = re.match(r"^(\d+\.\d+\.\d+-)(\d+)(.*)$", k)
    if m:
        return [f"{m[1]}{int(m[2]) - i}{m[3]}" for i in range(1, count + 1)]
    return [f"{k}+bench{i}" for i in range(1, count + 1)]


def apt_line():
    """The DPkg::Post-Invoke command of apt.conf.d/80rdkms, as apt's sh runs it."""
    f = REPO / "apt.conf.d/80rdkms"
    if not f.exists():
        return None
    m = re.search(r'Post-Invoke\s*\{\s*"((?:[^"\\]|\\.)*)"', f.read_text())
    return m[1].replace('\\"', '"') if m else None


def skip_note(bench, key):
    return f"skipped: more than {bench.mode[key]} (module, kernel) pairs would take minutes per run"


def check_status(series, pairs):
    r = series["rdkms"].runs
    if not r:
        return "no rdkms run"
    lines = r[0].out.splitlines()
    bad = [l for l in lines if not l.endswith(": installed")]
    if len(lines) != pairs or bad:
        return f"rdkms printed {len(lines)} lines for {pairs} installed pairs; unexpected: {bad[:3]}"
    d = series.get("dkms")
    if d and d.runs and d.runs[0].out != r[0].out:
        return "stdout differs from dkms status"
    return "ok"


def tree_stamp(root):
    """Path and mtime of everything a build or install would touch (the tool's own dot files at
    the top of the tree excluded)."""
    out = {}
    for base in (root.tree, root.path / "lib/modules"):
        for dirpath, dirnames, filenames in os.walk(base):
            if Path(dirpath) == root.tree:
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                filenames = [f for f in filenames if not f.startswith(".") and not f.startswith("mok.")]
            for f in filenames:
                p = os.path.join(dirpath, f)
                out[p] = os.lstat(p).st_mtime_ns
    return out


def check_unchanged(before, rd, rr):
    changed = []
    for side, old, root in (("dkms", before[0], rd), ("rdkms", before[1], rr)):
        if tree_stamp(root) != old:
            changed.append(side)
    return "ok" if not changed else f"tree changed (not a no-op) for {', '.join(changed)}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", dest="mode", action="store_const", const="quick")
    g.add_argument("--full", dest="mode", action="store_const", const="full")
    ap.set_defaults(mode="default")
    ap.add_argument("--rdkms", required=True)
    ap.add_argument("--kernel", help="kernel whose headers to build against")
    ap.add_argument("--out", default=str(REPO / "bench/results"))
    ap.add_argument("--tmpdir", default=os.environ.get("TMPDIR", "/var/tmp"))
    ap.add_argument("--only", default="status,autoinstall,postinst,apt,prerm,newkernel",
                    help="comma-separated cases to run (default: all)")
    ap.add_argument("--keep", action="store_true", help="keep the sandbox trees")
    args = ap.parse_args()
    bench = Bench(args)
    try:
        problems = bench.run()
    finally:
        bench.mounts.hide()
        if not args.keep:
            shutil.rmtree(bench.scratch, ignore_errors=True)
        else:
            print(f"kept {bench.scratch}", file=sys.stderr)
    for p in problems:
        print(f"bench: {p}", file=sys.stderr)
    # Missed targets are results; a tool failing or doing something else than the other is not.
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()

"""Timing of one command: spawned with posix_spawn (the cheapest way to start a process from
Python, so millisecond commands are not drowned in harness overhead), reaped with wait4 for its
exit status, CPU time and peak RSS, and summarised as median and spread."""

import os
import statistics
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Run:
    """One timed execution."""

    wall: float
    rc: int
    cpu: float
    # VmHWM of the spawned process itself, sampled while it ran (long runs only).
    hwm_kib: int | None
    out: str
    err: str


def spawn(argv, env, scratch, poll_hwm=False):
    """Runs argv (PATH looked up) with stdin from /dev/null and stdout/stderr captured in
    files under scratch; returns a Run. The clock covers process start to reaping."""
    out_path = os.path.join(scratch, "stdout")
    err_path = os.path.join(scratch, "stderr")
    wr = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, out_path, wr, 0o644),
        (os.POSIX_SPAWN_OPEN, 2, err_path, wr, 0o644),
    ]
    hwm = [None]
    done = threading.Event()
    t0 = time.perf_counter()
    pid = os.posix_spawnp(argv[0], argv, env, file_actions=actions)
    sampler = None
    if poll_hwm:
        sampler = threading.Thread(target=_sample_hwm, args=(pid, hwm, done), daemon=True)
        sampler.start()
    _, status, ru = os.wait4(pid, 0)
    t1 = time.perf_counter()
    done.set()
    if sampler:
        sampler.join()
    with open(out_path, errors="replace") as f:
        out = f.read()
    with open(err_path, errors="replace") as f:
        err = f.read()
    return Run(
        wall=t1 - t0,
        rc=os.waitstatus_to_exitcode(status),
        cpu=ru.ru_utime + ru.ru_stime,
        hwm_kib=hwm[0],
        out=out,
        err=err,
    )


def _sample_hwm(pid, hwm, done):
    """Keeps the last VmHWM seen in /proc/PID/status (it only grows, so the last sample before
    exit is the peak to within one interval)."""
    path = f"/proc/{pid}/status"
    while not done.wait(0.05):
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        hwm[0] = int(line.split()[1])
        except OSError:
            return


TIME = "/usr/bin/time"


def peak_rss(argv, env, scratch):
    """Peak RSS in KiB of argv and the descendants it waits for, from GNU time's %M (wait4's
    ru_maxrss). Not taken from the timed runs: posix_spawn starts the child in the harness's
    own memory, which wait4 would then count. None when GNU time is not installed."""
    if not os.path.exists(TIME):
        return None
    out = os.path.join(scratch, "rss")
    r = spawn([TIME, "-f", "%M", "-o", out, *argv], env, scratch)
    try:
        with open(out) as f:
            return int(f.read().split()[-1]), r
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class Series:
    """All runs of one tool in one case."""

    runs: list = field(default_factory=list)
    rss_kib: list = field(default_factory=list)
    status: str = "ok"

    def walls(self):
        return [r.wall for r in self.runs]

    def summary(self):
        """Median, spread and peak RSS as plain numbers for the JSON file."""
        if not self.runs:
            return {"status": self.status, "runs": 0}
        w = sorted(self.walls())
        q = statistics.quantiles(w, n=4) if len(w) >= 2 else [w[0], w[0], w[0]]
        hwms = [r.hwm_kib for r in self.runs if r.hwm_kib is not None]
        return {
            "status": self.status,
            "runs": len(w),
            "median_s": statistics.median(w),
            "min_s": w[0],
            "max_s": w[-1],
            "q1_s": q[0],
            "q3_s": q[2],
            "walls_s": [round(x, 6) for x in self.walls()],
            "cpu_median_s": statistics.median(r.cpu for r in self.runs),
            "peak_rss_kib": max(self.rss_kib) if self.rss_kib else None,
            "peak_hwm_kib": max(hwms) if hwms else None,
        }

    def median(self):
        return statistics.median(self.walls()) if self.runs else None


def spawn_floor(scratch, reps=50):
    """Median wall time of starting /bin/true the same way: what every figure includes."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    walls = sorted(spawn(["/bin/true"], env, scratch).wall for _ in range(reps))
    return statistics.median(walls)

"""Shared helpers of the benchmark scripts: a populated arm workload, process-tree memory sampling, small stats.

Not part of the package (benchmarks are plain scripts); imported by the scripts beside it.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

import numpy as np

# Ray's auto-connect off, as `simulate` turns it off (simulator/run/cli.py): a benchmark that runs a scenario and then
# the reference tick saw Serve's handle thread, left behind by the run's ray.shutdown(), start a fresh local Ray in
# this process (once in seven default runs on 2026-12-03): an idle Ray instance beside the reference tick's runs after
# the scenario. Every benchmark starts Ray explicitly (init_ray), and Ray reads this when it is imported: every
# script imports this module first. A setting in the environment wins.
os.environ.setdefault("RAY_ENABLE_AUTO_CONNECT", "0")

# ---------------------------------------------------------------------------- timing helpers


def pct(xs, q: float) -> float:
    return float(np.percentile(np.asarray(xs, np.float64), q)) if len(xs) else float("nan")


def fmt_table(rows: list[list], header: list[str]) -> str:
    """A plain fixed-width table (markdown-compatible pipes)."""
    cells = [[str(c) for c in header]] + [[c if isinstance(c, str) else _fmt(c) for c in r] for r in rows]
    w = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.rjust(w[i]) for i, c in enumerate(r)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (x + 2) for x in w) + "|"
    return "\n".join([line(cells[0]), sep] + [line(r) for r in cells[1:]])


def _fmt(x) -> str:
    if isinstance(x, float):
        if x != x:
            return "nan"
        if abs(x) >= 100:
            return f"{x:,.0f}"
        if abs(x) >= 1:
            return f"{x:.2f}"
        return f"{x:.3f}"
    return str(x)


# ---------------------------------------------------------------------------- an arm workload


@dataclass
class ArmWorkload:
    """A synthetic catalogue, its world, and the arm spec/context a scenario would give its control arm."""

    spec: object  # ArmSpec
    ctx: object  # ArmContext
    items: dict[str, np.ndarray]
    world: object  # World
    n_users: int
    t_req: int  # request time: end of the log, so every item is eligible
    warmup: list = field(default_factory=list)  # [(users, ts, seed, feedback tuple | None)]


def item_batch(log) -> dict[str, np.ndarray]:
    items = log.items
    fcols = [c for c in items.column_names if c.startswith("f_")]
    dense = (np.stack([items[c].to_numpy().astype(np.float32) for c in fcols], 1) if fcols
             else np.zeros((items.num_rows, 1), np.float32))
    return {"item_id": items["item_id"].to_numpy().astype(np.int64),
            "creator_id": items["creator_id"].to_numpy().astype(np.int64),
            "upload_ts": items["upload_ts"].to_numpy().astype(np.int64),
            "category": items["category"].to_numpy().astype(np.int64), "dense": dense}


def build_workload(scenario: str, arm_index: int, n_users: int, n_creators: int, days: int, seed: int) -> ArmWorkload:
    """The scenario's arm spec over a synthetic platform of the given size (a few thousand items)."""
    from scenarios import get_scenario
    from trainers.arm_context import ArmContext, arm_context
    from simulator.core.config import SyntheticConfig
    from simulator.core.schema import SECONDS_PER_DAY
    from simulator.sources.synthetic import generate_synthetic
    from simulator.world.platform import World

    sc = get_scenario(scenario)
    cfg = SyntheticConfig(n_users=n_users, n_creators=n_creators, days=days)
    log = generate_synthetic(cfg, seed)
    items = item_batch(log)
    world = World(log, sc.world, seed)
    ctx = ArmContext(model=sc.model, slate_size=cfg.slate_size, n_item_dense=items["dense"].shape[1], seed=sc.seed)
    spec = sc.arms[arm_index]
    t_req = log.t0 + days * SECONDS_PER_DAY
    return ArmWorkload(spec=spec, ctx=arm_context(ctx, arm_index), items=items, world=world, n_users=n_users, t_req=t_req)


def warm_up(policy, wl: ArmWorkload, rounds: int, users_per_round: int, seed: int) -> list:
    """Drive ``policy`` through ``rounds`` of recommend -> world responses -> feedback; returns the calls made
    so that another copy of the arm (a Serve replica) can be brought to exactly the same state."""
    rng = np.random.default_rng([seed, 0xBE7C])
    calls = []
    for r in range(rounds):
        users = np.sort(rng.choice(wl.n_users, size=min(users_per_round, wl.n_users), replace=False)).astype(np.int64)
        ts = np.full(len(users), wl.t_req - 3600 * (rounds - r), np.int64)
        call_seed = int(rng.integers(2**31))
        sl = policy.recommend(users, ts, call_seed)
        ri, si = np.nonzero(sl.item_ids >= 0)
        u, it, t = users[ri], sl.item_ids[ri, si], ts[ri]
        labels = wl.world.respond(u, it, np.random.default_rng([seed, r]))
        policy.feedback(u, it, t, labels)
        calls.append((users, ts, call_seed, (u, it, t, labels)))
    return calls


def request_batches(wl: ArmWorkload, n_calls: int, users_per_call: int, seed: int) -> list:
    rng = np.random.default_rng([seed, 0x7E57])
    out = []
    for _ in range(n_calls):
        users = np.sort(rng.choice(wl.n_users, size=min(users_per_call, wl.n_users), replace=False)).astype(np.int64)
        out.append((users, np.full(len(users), wl.t_req, np.int64), int(rng.integers(2**31))))
    return out


# ---------------------------------------------------------------------------- memory of a process tree

_RAY_MARKERS = ("ray::", "raylet", "gcs_server")
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (``[1]`` ppid, ``[11:15]`` CPU ticks, ``[19]``
    start time); None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    rest = stat[stat.rfind(")") + 2:].split()
    return rest if len(rest) > 19 else None


def _cmdline(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None


def _rss(pid: int) -> int:
    """Resident set size of ``pid`` in bytes (``/proc/PID/statm``: cheap); 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def _pss(pid: int) -> int:
    """Proportional set size of ``pid`` in bytes (``/proc/PID/smaps_rollup``: the kernel walks every mapping's page
    tables, costly for large processes); 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def tree_pids(root: int, include_ray: bool = True) -> set[int]:
    """``root``, all its descendants, and (optionally) orphaned Ray processes (``ray::``, raylet, gcs_server)
    started after ``root``: one scan of every process on the machine (a fresh :class:`ProcessTree`)."""
    return ProcessTree(root, include_ray).pids()


class ProcessTree:
    """``root``, its descendants and (with ``include_ray``) the Ray processes of this run orphaned to init, kept up
    to date between calls. The first call reads the stat and command line of every process on the machine; a
    sampler asks twice a second through a whole run, and reading them all every time took the benchmark's two
    samplers ~12 CPU-s of the driver's in a 4-day default run on Ray, ~4 % of the 2-core machine (the benchmark
    measuring itself). So each later call lists /proc and reads only the processes it has not seen before; a
    process is placed in or out of the tree when first seen (a child of a process in the tree is in it), and one
    seen outside it is looked at again only while it could still be an orphaned Ray process of this run (parent
    init, started after ``root``, its command line not yet ``ray::``). A process in the tree stays in it when its
    parent exits."""

    def __init__(self, root: int, include_ray: bool = True):
        self.root, self.include_ray = root, include_ray
        fields = _stat_fields(root)
        self._t_root = float(fields[19]) if fields else 0.0
        self._member: dict[int, bool] = {}
        self._orphan_candidates: set[int] = set()  # outside the tree, could still turn out an orphaned Ray process

    def _may_be_orphan(self, ppid: int, start: float) -> bool:
        """Re-parented to init and started after ``root``: a Ray process of this run if its command line says so."""
        return self.include_ray and ppid in (0, 1) and start >= self._t_root

    def pids(self) -> set[int]:
        live = {int(d) for d in os.listdir("/proc") if d.isdigit()}
        for gone in self._member.keys() - live:
            del self._member[gone]
        self._orphan_candidates &= live
        pending: dict[int, tuple[int, float, str]] = {}
        for pid in live - self._member.keys():
            rest, cmd = _stat_fields(pid), _cmdline(pid)
            if rest is not None and cmd is not None:
                pending[pid] = (int(rest[1]), float(rest[19]), cmd)
        while pending:  # parents before children: a new child of a new process waits for its parent's place
            placed = False
            for pid, (ppid, start, cmd) in list(pending.items()):
                if ppid in pending and pid != self.root:
                    continue
                orphan = self._may_be_orphan(ppid, start)
                member = (pid == self.root or self._member.get(ppid, False)
                          or (orphan and any(m in cmd for m in _RAY_MARKERS)))
                self._member[pid] = member
                if orphan and not member:
                    self._orphan_candidates.add(pid)
                del pending[pid]
                placed = True
            if not placed:  # not reachable (parent links form a tree); never loop forever
                for pid in pending:
                    self._member[pid] = False
                break
        for pid in list(self._orphan_candidates):
            cmd = _cmdline(pid)
            if cmd is not None and any(m in cmd for m in _RAY_MARKERS):
                self._member[pid] = True
                self._orphan_candidates.discard(pid)
        return {pid for pid, member in self._member.items() if member}


def _short_name(pid: int) -> str:
    cmd = _cmdline(pid)
    if cmd is None:
        return str(pid)
    cmd = cmd.strip()
    if cmd.startswith("ray::"):
        return cmd.split()[0]
    parts = cmd.split()
    if not parts:
        return str(pid)
    exe = os.path.basename(parts[0])
    if exe.startswith("python") and len(parts) > 1:  # python helpers: name them by their script
        script = next((os.path.basename(x) for x in parts[1:] if x.endswith(".py")), None)
        return f"python {script}" if script else exe
    return exe


def cpu_seconds_by_process(root: int | None = None) -> dict[str, float]:
    """CPU seconds (user + system) so far of this process tree and of Ray processes, keyed by a short name
    (the ``ray::`` actor name, or the executable), summed over processes of the same name."""
    root = root or os.getpid()
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for pid in tree_pids(root):
        rest, cmd = _stat_fields(pid), _cmdline(pid)
        if rest is None or cmd is None:
            continue
        cmd = cmd.strip()
        secs = (int(rest[11]) + int(rest[12])) / tick
        if pid == root:
            name = "driver"
        elif cmd.startswith("ray::"):
            name = cmd.split()[0]
        else:
            name = os.path.basename(cmd.split()[0]) if cmd else str(pid)
        out[name] = out.get(name, 0.0) + secs
    return out


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all cores, /proc/stat) since boot."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (v + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _process_name(pid: int, root: int) -> str:
    """``driver`` for ``root``, else :func:`_short_name` (the ``ray::`` actor name or the executable)."""
    return "driver" if pid == root else _short_name(pid)


def _tree_cpu_ticks(tree: ProcessTree, names: dict | None = None,
                    refresh: bool = True) -> dict[tuple[int, str], int]:
    """(pid, start time) -> CPU clock ticks (user + system, own + reaped children) of the tree's processes.
    ``names`` gets the name of each key it lacks and, with ``refresh``, each key's latest name other than
    ``ray::IDLE`` (a Ray worker takes its actor's name once it runs one)."""
    out = {}
    for pid in tree.pids():
        rest = _stat_fields(pid)
        if rest is None:
            continue
        key = (pid, rest[19])
        out[key] = sum(int(x) for x in rest[11:15])
        if names is not None and (refresh or key not in names):
            name = _process_name(pid, tree.root)
            if name != "ray::IDLE" or key not in names:
                names[key] = name
    return out


class ForeignLoad:
    """How much CPU the rest of the machine used while we measured (a contamination check).

    A daemon thread samples, every ``interval`` s, the CPU counters of this tree and Ray's processes (so the
    CPU of processes that exit before the end, such as Ray's workers at shutdown, is still counted up to their
    last sample) and the machine's busy CPU time from /proc/stat. ``foreign_s`` = machine busy CPU-seconds
    minus ours: an estimate, slightly high (up to ``interval`` of CPU per exiting process is missed). The
    processes' names are read again every ``name_interval`` s and at the end (a process that takes an actor's name
    and exits within that interval keeps the one it had)."""

    def __init__(self, interval: float = 0.5, name_interval: float = 5.0):
        self.interval, self.name_interval = interval, name_interval
        self.root = os.getpid()
        self._tree = ProcessTree(self.root)
        self._first: dict[tuple[int, str], int] = {}
        self._last: dict[tuple[int, str], int] = {}
        self._names: dict[tuple[int, str], str] = {}
        self._named_at = -float("inf")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load-sampler", daemon=True)

    def _sample(self, refresh_names: bool = False) -> None:
        if time.monotonic() - self._named_at >= self.name_interval:
            refresh_names = True
        if refresh_names:
            self._named_at = time.monotonic()
        for key, ticks in _tree_cpu_ticks(self._tree, self._names, refresh_names).items():
            self._first.setdefault(key, 0)  # born after __enter__: all its CPU is in the window
            self._last[key] = ticks

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> "ForeignLoad":
        self.t0, self.b0 = time.perf_counter(), busy_cpu_seconds()
        self._sample()  # processes alive now: count only what they use from here on
        self._first = dict(self._last)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample(refresh_names=True)
        self.wall = time.perf_counter() - self.t0
        self.busy = busy_cpu_seconds() - self.b0
        tick = os.sysconf("SC_CLK_TCK")
        self.ours = sum(v - self._first.get(k, 0) for k, v in self._last.items()) / tick
        self.foreign_s = max(0.0, self.busy - self.ours)
        self.cores = os.cpu_count() or 1

    def summary(self) -> str:
        return (f"machine busy {self.busy:.0f} CPU-s over {self.wall:.0f}s wall ({self.cores} cores), ours "
                f"{self.ours:.0f} CPU-s, other processes ~{self.foreign_s:.0f} CPU-s "
                f"({100 * self.foreign_s / max(self.wall * self.cores, 1e-9):.0f}% of the machine)")

    def by_process(self) -> dict[str, float]:
        """Our CPU seconds in the window by process name (processes of one name summed), largest first."""
        tick = os.sysconf("SC_CLK_TCK")
        out: dict[str, float] = {}
        for key, ticks in self._last.items():
            name = self._names.get(key, str(key[0]))
            out[name] = out.get(name, 0.0) + (ticks - self._first.get(key, 0)) / tick
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def as_dict(self) -> dict:
        return {"wall_s": self.wall, "busy_cpu_s": self.busy, "our_cpu_s": self.ours, "foreign_cpu_s": self.foreign_s,
                "cpu_s_by_process": self.by_process()}


class MemorySampler:
    """Samples the summed RSS (and PSS, which does not double-count shared pages such as Ray's object store
    mappings) of this process tree plus Ray's processes in a daemon thread.

    RSS (``/proc/PID/statm``, a few microseconds) is read every ``interval`` seconds. PSS (``smaps_rollup``, which
    walks every mapping's page tables) is read every ``pss_interval`` seconds, whenever the RSS-sum exceeds by
    ``pss_rise`` (a share) the highest RSS-sum at which PSS was read, and at exit: on this 2-core VM reading PSS of
    Ray's ~25 processes every 0.5 s cost the measured run ~100 CPU-s of system time (docs/performance.md), the
    benchmark measuring itself. The peak PSS is that of the readings: a spike shorter than ``pss_interval`` that
    does not raise the RSS-sum by ``pss_rise`` can be missed (the RSS-sum peak is still sampled every
    ``interval``)."""

    def __init__(self, interval: float = 0.5, root: int | None = None, with_pss: bool = True,
                 pss_interval: float = 10.0, pss_rise: float = 0.05):
        self.interval = interval
        self.pss_interval, self.pss_rise = pss_interval, pss_rise
        self.root = root or os.getpid()
        self._tree = ProcessTree(self.root)
        self.with_pss = with_pss and os.path.exists(f"/proc/{self.root}/smaps_rollup")
        self.peak_rss = self.peak_pss = self.peak_driver_rss = 0
        self.peak_procs = 0
        self.samples = self.pss_samples = 0
        self.peak_breakdown: dict[str, list[int]] = {}
        self.base_used: int | None = None  # machine-wide used memory at the first sample
        self.peak_used = 0
        self._last_pss_t = -float("inf")
        self._high_pss_rss = self._breakdown_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mem-sampler", daemon=True)

    @staticmethod
    def system_used() -> int:
        """MemTotal - MemAvailable (bytes): memory the whole machine cannot hand out, page cache excluded."""
        info = {}
        with open("/proc/meminfo") as f:
            for line in f:
                k, v = line.split(":", 1)
                info[k] = int(v.split()[0]) * 1024
        return info["MemTotal"] - info.get("MemAvailable", info.get("MemFree", 0))

    def _pss_due(self, rss: int, force: bool) -> bool:
        """Whether this sample reads PSS too (see the class docstring)."""
        if not self.with_pss:
            return False
        return (force or time.monotonic() - self._last_pss_t >= self.pss_interval
                or rss > self._high_pss_rss * (1 + self.pss_rise))

    def sample(self, force_pss: bool = False) -> None:
        used = self.system_used()
        if self.base_used is None:
            self.base_used = used
        self.peak_used = max(self.peak_used, used)
        pids = self._tree.pids()
        rss_by_pid = {p: _rss(p) for p in pids}
        rss = sum(rss_by_pid.values())
        self.peak_driver_rss = max(self.peak_driver_rss, rss_by_pid.get(self.root, 0))
        with_pss = self._pss_due(rss, force_pss)
        pss_by_pid = {p: _pss(p) for p in pids} if with_pss else {}
        if with_pss:
            pss = sum(pss_by_pid.values())
            self._last_pss_t, self._high_pss_rss = time.monotonic(), max(self._high_pss_rss, rss)
            self.pss_samples += 1
            self.peak_pss = max(self.peak_pss, pss)
        if (with_pss or not self.with_pss) and rss > self._breakdown_rss:
            # name -> [rss, pss, processes] at the highest RSS-sum read with PSS (names read only here: a command
            # line per process at every sample was most of a sample's cost)
            by_name: dict[str, list[int]] = {}
            for p, r in rss_by_pid.items():
                acc = by_name.setdefault(_process_name(p, self.root), [0, 0, 0])
                acc[0] += r
                acc[1] += pss_by_pid.get(p, 0)
                acc[2] += 1
            self.peak_breakdown = by_name
            self._breakdown_rss = rss
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_procs = max(self.peak_procs, len(pids))
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> "MemorySampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample(force_pss=True)

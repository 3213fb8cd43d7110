"""Runs one benchmark configuration: a cluster of replica processes, load generators in
processes of their own, CPU read from /proc, figures computed over the window after the
warm-up. Every process started here is ended here, also when a run fails.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Config:
    mode: str                 # pbft | paxos | pysyncobj
    f: int = 1
    batch_size: int = 128
    in_flight: int = 16
    payload_bytes: int = 64
    scenario: str = "steady"  # a label; the named ones below also set what happens
    duration: float = 6.0
    warmup: float = 1.0
    transport: str = "tls"    # tls | plaintext (init --insecure-plaintext), to measure what TLS costs
    byzantine: tuple[tuple[int, str], ...] = ()   # (replica, strategy): started with --byzantine
    hostile: str | None = None                     # a hostile client beside the load (bench.hostile_load)
    event: str | None = None                       # kill-leader | kill-follower | pause-leader, at event_at
    event_at: float = 5.0
    fault_at: float | None = None   # Byzantine replicas start --dormant and get SIGUSR1 then; hostile starts then

    def __post_init__(self) -> None:
        named = {"silent-backup": dict(byzantine=((self.n - 1, "silent"),)),
                 "slow-primary": dict(byzantine=((0, "slow"),)),
                 "primary-killed": dict(event="kill-leader")}
        for k, v in named.get(self.scenario, {}).items():
            if not getattr(self, k):
                setattr(self, k, v)

    @property
    def n(self) -> int:
        return 3 * self.f + 1 if self.mode == "pbft" else 2 * self.f + 1


def _cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / _TICKS


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.time() + 3
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _status(cluster_dir: str) -> list[dict]:
    out = subprocess.run([sys.executable, "-m", "bft", "status", cluster_dir, "--json"],
                         capture_output=True, text=True, timeout=20)
    try:
        return json.loads(out.stdout)
    except ValueError:
        return []


def _wait_ready(cluster_dir: str, n: int, timeout: float = 40.0) -> None:
    end = time.time() + timeout
    while time.time() < end:
        st = _status(cluster_dir)
        if len([r for r in st if r.get("reachable", True) and "view" in r]) == n:
            return
        time.sleep(0.2)
    raise RuntimeError(f"cluster {cluster_dir} did not come up within {timeout:.0f} s")


def _counter(st: list[dict], key: str) -> int | None:
    vals = [r.get(key) for r in st if r.get("reachable", True)]
    if not vals or any(v is None for v in vals):
        return None
    return sum(vals)


def run(cfg: Config, workdir: Path) -> dict:
    if cfg.mode == "pysyncobj":
        return _run_pysyncobj(cfg, workdir)
    from bft.app.clusterinit import init_cluster
    from bft.runtime.factory import write_tuning

    d = tempfile.mkdtemp(prefix=f"{cfg.mode}-", dir=workdir)
    loadgens = 1 if cfg.in_flight <= 16 else 2
    init_cluster(d, cfg.mode, cfg.f, clients=loadgens + 1, insecure_plaintext=cfg.transport == "plaintext")
    write_tuning(d, {"batch_size": cfg.batch_size})
    procs: list[subprocess.Popen] = []
    try:
        byzantine = dict(cfg.byzantine)
        for i in range(cfg.n):
            extra = ["--byzantine", byzantine[i]] if i in byzantine else []
            if extra and cfg.fault_at is not None:
                extra.append("--dormant")
            log = open(Path(d) / f"replica-{i}.log", "w")
            procs.append(subprocess.Popen([sys.executable, "-m", "bft", "replica", d, "--id", str(i), *extra],
                                          stdout=log, stderr=subprocess.STDOUT))
        _wait_ready(d, cfg.n)
        outs = [Path(d) / f"load-{c}.json" for c in range(loadgens)]
        per = [cfg.in_flight // loadgens + (1 if c < cfg.in_flight % loadgens else 0) for c in range(loadgens)]
        st0 = _status(d)

        def start_hostile() -> None:
            procs.append(subprocess.Popen([sys.executable, "-m", "bench.hostile_load", "--cluster", d, "--client",
                                           str(loadgens), "--kind", cfg.hostile, "--duration", str(cfg.duration + 1)],
                                          stdout=subprocess.DEVNULL, stderr=open(Path(d) / "hostile.log", "w")))

        if cfg.hostile and cfg.fault_at is None:
            start_hostile()
        gens = [subprocess.Popen([sys.executable, "-m", "bench.loadgen", "--cluster", d, "--client", str(c),
                                  "--in-flight", str(per[c]), "--duration", str(cfg.duration),
                                  "--value-bytes", str(cfg.payload_bytes), "--out", str(outs[c])])
                for c in range(loadgens)]
        t0 = time.time()
        time.sleep(cfg.warmup)
        replica_pids = [p.pid for p in procs[:cfg.n]]
        cpu_a = _cpu_seconds(replica_pids)
        if cfg.fault_at is not None:
            time.sleep(max(0.0, cfg.fault_at - (time.time() - t0)))
            for i in byzantine:
                procs[i].send_signal(signal.SIGUSR1)
            if cfg.hostile:
                start_hostile()
        if cfg.event:
            time.sleep(max(0.0, cfg.event_at - (time.time() - t0)))
            victim = _event(cfg, d, procs)
            replica_pids.remove(procs[victim].pid)          # a killed process's CPU cannot be read after
        time.sleep(max(0.0, cfg.duration - (time.time() - t0)))
        cpu_b = _cpu_seconds(replica_pids)
        st1 = _status(d)
        for g in gens:
            g.wait(timeout=cfg.duration + 30)
        completed = []
        errors = 0
        for o in outs:
            data = json.loads(o.read_text())
            completed += data["completed"]
            errors += data["errors"]
        return _figures(cfg, completed, cpu_b - cpu_a, st0, st1, errors)
    finally:
        _stop(procs)


def _event(cfg: Config, d: str, procs: list[subprocess.Popen]) -> int:
    """Kill or pause the leader or a follower (as ``status`` reports them now); which one."""
    st = _status(d)
    leader = next((r["leader"] for r in st if r.get("reachable", True) and "leader" in r), 0)
    victim = leader if cfg.event in ("kill-leader", "pause-leader") else (leader + 1) % cfg.n
    if cfg.event == "pause-leader":
        procs[victim].send_signal(signal.SIGSTOP)
        threading.Timer(5.0, lambda: procs[victim].poll() is None and procs[victim].send_signal(signal.SIGCONT)).start()
    else:
        procs[victim].kill()
    return victim


def _figures(cfg: Config, completed: list, cpu: float, st0: list[dict], st1: list[dict], errors: int) -> dict:
    window = [c for c in completed if cfg.warmup < c[0] <= cfg.duration]
    span = cfg.duration - cfg.warmup
    lat = sorted(c[1] for c in window)

    def pct(p: float) -> float | None:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))], 3) if lat else None

    tx = len(window)
    per_tx = {}
    for key, name in (("msgs_sent", "msgs_per_tx"), ("bytes_sent", "bytes_per_tx"), ("verifies", "verifies_per_tx")):
        a, b = _counter(st0, key), _counter(st1, key)
        per_tx[name] = round((b - a) / tx, 2) if a is not None and b is not None and tx else None
    series = [0] * int(cfg.duration * 2 + 1)
    for t, _ in completed:
        if t < cfg.duration:
            series[int(t * 2)] += 1
    return {"mode": cfg.mode, "n": cfg.n, "f": cfg.f, "batch_size": cfg.batch_size, "in_flight": cfg.in_flight,
            "payload_bytes": cfg.payload_bytes, "scenario": cfg.scenario, "transport": cfg.transport,
            "duration_s": span,
            "committed": tx, "throughput_tps": round(tx / span, 1),
            "latency_ms": {"p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99)},
            "cpu_s_per_tx": round(cpu / tx, 6) if tx else None, **per_tx,
            "errors": errors, "tps_over_time": [x * 2 for x in series],
            "latencies_ms": [round(x, 3) for x in lat[:: max(1, len(lat) // 500)]]}


def _run_pysyncobj(cfg: Config, workdir: Path) -> dict:
    from bft.app.clusterinit import free_ports

    ports = free_ports("127.0.0.1", 2 * cfg.n)
    raft = ",".join(f"127.0.0.1:{p}" for p in ports[: cfg.n])
    fronts = ports[cfg.n:]
    d = Path(tempfile.mkdtemp(prefix="pysyncobj-", dir=workdir))
    procs: list[subprocess.Popen] = []
    try:
        for i in range(cfg.n):
            procs.append(subprocess.Popen([sys.executable, "-m", "bench.pysyncobj_baseline", "node", "--id", str(i),
                                           "--raft", raft, "--port", str(fronts[i])],
                                          stdout=subprocess.DEVNULL, stderr=open(d / f"node-{i}.log", "w")))
        time.sleep(2.0)   # Raft elects a leader
        out = d / "load.json"
        gen = subprocess.Popen([sys.executable, "-m", "bench.pysyncobj_baseline", "load", "--port", str(fronts[0]),
                                "--in-flight", str(cfg.in_flight), "--duration", str(cfg.duration),
                                "--value-bytes", str(cfg.payload_bytes), "--out", str(out)])
        time.sleep(cfg.warmup)
        pids = [p.pid for p in procs]
        cpu_a = _cpu_seconds(pids)
        time.sleep(cfg.duration - cfg.warmup)
        cpu_b = _cpu_seconds(pids)
        gen.wait(timeout=cfg.duration + 30)
        data = json.loads(out.read_text())
        res = _figures(cfg, data["completed"], cpu_b - cpu_a, [], [], data["errors"])
        res["batch_size"] = None
        return res
    finally:
        _stop(procs)


def median_of(runs: list[dict]) -> dict:
    """The run with the median throughput, annotated with the min and max over the repeats."""
    runs = sorted(runs, key=lambda r: r["throughput_tps"])
    mid = dict(runs[len(runs) // 2])
    mid["throughput_min"] = runs[0]["throughput_tps"]
    mid["throughput_max"] = runs[-1]["throughput_tps"]
    mid["repeats"] = len(runs)
    return mid

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
    scenario: str = "steady"  # steady | primary-killed | silent-backup | slow-primary
    duration: float = 6.0
    warmup: float = 1.0
    transport: str = "tls"    # tls | plaintext (init --insecure-plaintext), to measure what TLS costs

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
    from bft.clusterinit import init_cluster

    d = tempfile.mkdtemp(prefix=f"{cfg.mode}-", dir=workdir)
    loadgens = 1 if cfg.in_flight <= 16 else 2
    init_cluster(d, cfg.mode, cfg.f, clients=loadgens, insecure_plaintext=cfg.transport == "plaintext")
    toml = Path(d) / "cluster.toml"
    toml.write_text(toml.read_text().replace(f"n = {cfg.n}\n", f"n = {cfg.n}\nbatch_size = {cfg.batch_size}\n", 1))
    procs: list[subprocess.Popen] = []
    try:
        for i in range(cfg.n):
            extra = []
            if cfg.scenario == "silent-backup" and i == cfg.n - 1:
                extra = ["--byzantine", "silent"]
            if cfg.scenario == "slow-primary" and i == 0:
                extra = ["--byzantine", "slow"]
            log = open(Path(d) / f"replica-{i}.log", "w")
            procs.append(subprocess.Popen([sys.executable, "-m", "bft", "replica", d, "--id", str(i), *extra],
                                          stdout=log, stderr=subprocess.STDOUT))
        _wait_ready(d, cfg.n)
        # the killed primary's CPU cannot be read after its death: count the survivors only
        replica_pids = [p.pid for p in procs][1 if cfg.scenario == "primary-killed" else 0:]
        outs = [Path(d) / f"load-{c}.json" for c in range(loadgens)]
        per = [cfg.in_flight // loadgens + (1 if c < cfg.in_flight % loadgens else 0) for c in range(loadgens)]
        st0 = _status(d)
        gens = [subprocess.Popen([sys.executable, "-m", "bench.loadgen", "--cluster", d, "--client", str(c),
                                  "--in-flight", str(per[c]), "--duration", str(cfg.duration),
                                  "--value-bytes", str(cfg.payload_bytes), "--out", str(outs[c])])
                for c in range(loadgens)]
        t0 = time.time()
        time.sleep(cfg.warmup)
        cpu_a = _cpu_seconds(replica_pids)
        if cfg.scenario == "primary-killed":
            time.sleep(max(0.0, 5.0 - cfg.warmup))
            procs[0].kill()
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
    from bft.clusterinit import free_ports

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

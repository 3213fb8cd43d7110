"""``python -m bench --attacks``: throughput under attack, as a ratio to fault-free (issue 12).

pbft n=4 at 64 (and, without --quick, 16) requests in flight: each scenario is one run with
real processes, TCP, TLS and signatures, beside the fault-free run of the same invocation
and load. paxos n=3 with the crash-fault subset. The goal: every pbft scenario keeps at
least half of fault-free throughput.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness import Config, run

GOAL = 0.5
# Every fault starts FAULT_AT seconds into the load, inside the measured window (WARMUP to
# DURATION): Byzantine replicas run --dormant until SIGUSR1, hostile clients start then, crashes
# happen then. So a ratio includes the fault's whole cost: detection, view change, recovery.
DURATION, WARMUP, FAULT_AT = 6.0, 1.0, 2.0


@dataclass(frozen=True)
class Scenario:
    name: str
    byzantine: tuple[tuple[int, str], ...] = ()
    hostile: str | None = None
    event: str | None = None
    modes: tuple[str, ...] = ("pbft",)
    bound: str = ""                 # what bounds the loss (printed under a ratio below GOAL)
    extra: dict = field(default_factory=dict, hash=False, compare=False)


SCENARIOS = [
    Scenario("fault-free", modes=("pbft", "paxos")),
    Scenario("silent primary", byzantine=((0, "silent"),),
             bound="heartbeat: a request waits T/2 + 0.25 s unbatched, then SUSPECT and a view change"),
    Scenario("slow primary", byzantine=((0, "slow"),),
             bound="calibration: with no record yet, a view under demand ends after 2 s"),
    Scenario("primary sending empty batches", byzantine=((0, "empty-batches"),),
             bound="heartbeat: empty batches are no progress"),
    Scenario("primary replaying executed requests", byzantine=((0, "replay-executed"),),
             bound="heartbeat: replayed requests are no progress"),
    Scenario("primary censoring one client", byzantine=((0, "censor"),),
             bound="censorship: a client's oldest request may wait one request timeout (1 s)"),
    Scenario("silent backup", byzantine=((3, "silent"),)),
    Scenario("slow backup", byzantine=((3, "slow"),)),
    Scenario("backup flooding votes", byzantine=((3, "flood-votes"),),
             bound="its intake: 20,000 tokens/s, a repeated vote costs 16"),
    Scenario("backup flooding VIEW-CHANGEs", byzantine=((3, "flood-vc"),),
             bound="its intake: 20,000 tokens/s, a repeated VIEW-CHANGE costs 16"),
    Scenario("client sending bad signatures", hostile="bad-signatures",
             bound="8 bad signatures, then 10 s blacklisted, unread"),
    Scenario("client sending maximum-size operations", hostile="max-size",
             bound="its quota (16 MiB held) and one request per round of the fair queue"),
    Scenario("1,000 idle unauthenticated sockets per replica", hostile="idle-sockets",
             bound="the pre-authentication budget: 64 per source, 128 in all, the idlest evicted"),
    Scenario("leader killed", event="kill-leader", modes=("paxos",)),
    Scenario("follower killed", event="kill-follower", modes=("paxos",)),
    Scenario("leader paused 5 s (SIGSTOP)", event="pause-leader", modes=("paxos",)),
]


def configs(quick: bool) -> list[tuple[Scenario, Config]]:
    out = []
    for k in ((64,) if quick else (64, 16)):
        for sc in SCENARIOS:
            for mode in sc.modes:
                if mode == "paxos" and k != 64:
                    continue
                out.append((sc, Config(mode, 1, 128, k, scenario=sc.name, duration=DURATION, warmup=WARMUP,
                                       byzantine=sc.byzantine, hostile=sc.hostile, event=sc.event,
                                       event_at=FAULT_AT, fault_at=FAULT_AT)))
    return out


def ratios(results: list[dict]) -> None:
    """Each run's ratio to the fault-free run of its mode and load, and its dip: the slowest
    half second after the fault and how long throughput stayed under half of fault-free."""
    base = {(r["mode"], r["in_flight"]): r["throughput_tps"] for r in results if r["scenario"] == "fault-free"}
    for r in results:
        b = base.get((r["mode"], r["in_flight"]))
        r["ratio"] = round(r["throughput_tps"] / b, 2) if b else None
        bins = r["tps_over_time"][int(FAULT_AT * 2):int(DURATION * 2)]
        r["dip_tps"] = min(bins) if bins else None
        r["seconds_below_half"] = sum(0.5 for x in bins if b and x < GOAL * b)


def table(results: list[dict]) -> str:
    by_name = {sc.name: sc for sc in SCENARIOS}
    lines = ["| mode | in flight | scenario | tx/s | ratio to fault-free | p50 ms | p99 ms | slowest 0.5 s after "
             "the fault (tx/s) | seconds under half |",
             "|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for r in results:
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}" + (" **below 0.5**" if r["ratio"] < GOAL else "")
        lat = r["latency_ms"]
        lines.append(f"| {r['mode']} n={r['n']} | {r['in_flight']} | {r['scenario']} | {r['throughput_tps']} | {ratio} "
                     f"| {lat['p50']} | {lat['p99']} | {r['dip_tps']} | {r['seconds_below_half']} |")
        sc = by_name.get(r["scenario"])
        if r["ratio"] is not None and r["ratio"] < GOAL and sc is not None and sc.bound:
            notes.append(f"- {r['mode']} {r['in_flight']} in flight, {r['scenario']}: bounded by {sc.bound}")
    return "\n".join(lines + ([""] + notes if notes else []))


def chart(results: list[dict], path: Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [r for r in results if r["ratio"] is not None and r["scenario"] != "fault-free"]
    labels = [f"{r['mode']} {r['in_flight']}: {r['scenario']}" for r in rows]
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(rows) + 1.2))
    colors = ["tab:red" if r["ratio"] < GOAL else "tab:blue" for r in rows]
    ax.barh(range(len(rows)), [r["ratio"] for r in rows], color=colors)
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.axvline(GOAL, color="black", linestyle="--", label="goal: 0.5 of fault-free")
    ax.set_xlabel("throughput / fault-free throughput (same run, same load)")
    ax.set_title("Throughput under attack")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def main(quick: bool, out: Path, json_path: str | None) -> int:
    todo = configs(quick)
    results: list[dict] = []
    failed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bftattacks-") as work:
        for i, (sc, cfg) in enumerate(todo, 1):
            print(f"[{i}/{len(todo)}] {cfg.mode} n={cfg.n} in-flight={cfg.in_flight}: {sc.name} ...", flush=True)
            try:
                r = run(cfg, Path(work))
            except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as e:
                print(f"    run failed: {e}", flush=True)
                failed.append(f"{cfg.mode} {cfg.in_flight} {sc.name}")
                continue
            print(f"    {r['throughput_tps']} tx/s, p50 {r['latency_ms']['p50']} ms", flush=True)
            results.append(r)
    ratios(results)
    for r in results:
        r.pop("latencies_ms", None)
    path = Path(json_path) if json_path else out / "attacks.json"
    path.write_text(json.dumps({"goal": GOAL, "results": results}, indent=1))
    md = table(results)
    (out / "attacks.md").write_text(md + "\n")
    print(md)
    drew = chart(results, out / "attacks.png")
    below = [r for r in results if r["mode"] == "pbft" and r["ratio"] is not None and r["ratio"] < GOAL]
    print(f"wrote {path}, {out / 'attacks.md'}" + (f", {out / 'attacks.png'}" if drew else ""))
    if failed:
        print(f"{len(failed)} runs failed: {'; '.join(failed)}", file=sys.stderr)
    print(f"{len(below)} pbft scenarios below {GOAL} of fault-free")
    return 1 if failed else 0

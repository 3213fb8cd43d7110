"""``python -m bench``: the price of Byzantine tolerance, measured on the same work.

pbft and paxos clusters (and the PySyncObj Raft baseline) as separate processes on
127.0.0.1, closed-loop load generators in processes of their own, warm-up excluded,
each headline figure the median of repeated runs with min and max. Writes a JSON file,
prints a markdown table, and draws PNG plots under --out.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.harness import Config, median_of, run


def crypto_floor() -> dict:
    """Ed25519 verifies per second here, times the cores, over the verifies a transaction needs."""
    from crypto.keys import generate
    from crypto.signing import Ed25519Verifier

    s = generate()
    msgs = [(b"m%d" % i, s.sign(b"d", b"m%d" % i)) for i in range(2000)]
    t0 = time.perf_counter()
    for m, sig in msgs:
        Ed25519Verifier().verify(s.public_key, b"d", m, sig)
    per_s = len(msgs) / (time.perf_counter() - t0)
    cores = os.cpu_count() or 1
    return {"verifies_per_s_per_core": round(per_s), "cores": cores,
            # pbft: each of n=4 replicas checks the client's signature; paxos: the leader only
            "pbft": round(per_s * cores / 4), "paxos": round(per_s * cores / 1)}


def plan(quick: bool) -> list[tuple[Config, int]]:
    if quick:
        return [(Config("pbft", 1, 128, 1), 1), (Config("pbft", 1, 128, 64), 1),
                (Config("paxos", 1, 128, 1), 1), (Config("paxos", 1, 128, 64), 1),
                (Config("pysyncobj", 1, 128, 1), 1), (Config("pysyncobj", 1, 128, 64), 1)]
    runs: list[tuple[Config, int]] = []
    for mode in ("pbft", "paxos"):
        for f in (1, 2, 3):                                        # n: pbft 4,7,10 / paxos 3,5,7
            runs.append((Config(mode, f, 128, 64), 3 if f == 1 else 1))
        for b in (1, 16):
            runs.append((Config(mode, 1, b, 64), 1))
        for k in (1, 16):
            runs.append((Config(mode, 1, 128, k), 3 if k == 1 else 1))
        runs.append((Config(mode, 1, 128, 64, payload_bytes=1024), 1))
        runs.append((Config(mode, 1, 128, 16, scenario="primary-killed", duration=12.0), 1))
    runs.append((Config("pbft", 1, 128, 16, scenario="silent-backup"), 1))
    runs.append((Config("pbft", 1, 128, 16, scenario="slow-primary", duration=10.0), 1))
    for k in (1, 64):
        runs.append((Config("pysyncobj", 1, 128, k), 3))
    return runs


def plan_channels(quick: bool) -> list[tuple[Config, int]]:
    """What TLS costs: each configuration with TLS and with plaintext links, one run of each
    in turn (so that a slow spell of the machine hits both), merged afterwards."""
    runs: list[tuple[Config, int]] = []
    for _ in range(1 if quick else 3):
        for mode in ("pbft", "paxos"):
            for k in (64, 1):
                for transport in ("tls", "plaintext"):
                    runs.append((Config(mode, 1, 128, k, transport=transport), 1))
    return runs


def merge_repeats(results: list[dict]) -> list[dict]:
    """One row per configuration: the median of its runs (``plan_channels`` spreads them out)."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["mode"], r["n"], r["in_flight"], r.get("transport", "tls")), []).append(r)
    return [median_of(runs) for runs in groups.values()]


def channel_costs(results: list[dict]) -> list[str]:
    """One line per configuration: TLS throughput and p50 against plaintext in the same run."""
    lines = []
    by = {(r["mode"], r["in_flight"], r.get("transport", "tls")): r for r in results}
    for (mode, k, transport), tls in sorted(by.items()):
        plain = by.get((mode, k, "plaintext"))
        if transport != "tls" or plain is None or not plain["throughput_tps"]:
            continue
        ratio = tls["throughput_tps"] / plain["throughput_tps"]
        lines.append(f"{mode} n={tls['n']} in flight {k}: TLS {tls['throughput_tps']} tx/s, plaintext "
                     f"{plain['throughput_tps']} tx/s (TLS costs {100 * (1 - ratio):.1f}%); p50 "
                     f"{tls['latency_ms']['p50']} vs {plain['latency_ms']['p50']} ms")
    return lines


def table(results: list[dict], floor: dict) -> str:
    head = ("| mode | n | batch | in flight | payload | scenario | tx/s (min-max) | p50 ms | p90 ms | p99 ms "
            "| CPU ms/tx | msgs/tx | verifies/tx | % of crypto floor |")
    lines = [head, "|" + "---|" * 14]
    for r in results:
        lat = r["latency_ms"]
        fl = floor.get(r["mode"])
        pct = f"{100 * r['throughput_tps'] / fl:.0f}%" if fl else "-"
        rng = f" ({r.get('throughput_min')}-{r.get('throughput_max')})" if r.get("repeats", 1) > 1 else ""
        cpu = f"{r['cpu_s_per_tx'] * 1000:.3f}" if r["cpu_s_per_tx"] else "-"
        mode = r["mode"] + (" (plaintext)" if r.get("transport") == "plaintext" else "")
        lines.append(f"| {mode} | {r['n']} | {r['batch_size'] or '-'} | {r['in_flight']} | {r['payload_bytes']} "
                     f"| {r['scenario']} | {r['throughput_tps']}{rng} | {lat['p50']} | {lat['p90']} | {lat['p99']} "
                     f"| {cpu} | {r['msgs_per_tx'] if r['msgs_per_tx'] is not None else '-'} "
                     f"| {r['verifies_per_tx'] if r['verifies_per_tx'] is not None else '-'} | {pct} |")
    return "\n".join(lines)


def plots(results: list[dict], out: Path) -> list[str]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no plots", file=sys.stderr)
        return []
    made = []
    steady = [r for r in results if r["scenario"] == "steady" and r["in_flight"] == 64 and r["payload_bytes"] == 64
              and r["batch_size"] in (128, None)]
    fig, ax = plt.subplots(figsize=(6, 4))
    for mode in ("pbft", "paxos", "pysyncobj"):
        pts = sorted((r["n"], r["throughput_tps"]) for r in steady if r["mode"] == mode)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=mode)
    ax.set_xlabel("replicas n"); ax.set_ylabel("committed tx/s"); ax.set_title("Throughput against n (64 in flight)")
    ax.legend(); fig.tight_layout(); fig.savefig(out / "throughput_vs_n.png"); plt.close(fig)
    made.append("throughput_vs_n.png")
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in results:
        if r["scenario"] == "steady" and r["in_flight"] == 1 and r["latencies_ms"]:
            xs = sorted(r["latencies_ms"])
            ax.plot(xs, [(i + 1) / len(xs) for i in range(len(xs))], label=f"{r['mode']} n={r['n']}")
    ax.set_xlabel("latency ms"); ax.set_ylabel("fraction"); ax.set_title("Latency CDF, 1 request in flight")
    ax.legend(); fig.tight_layout(); fig.savefig(out / "latency_cdf.png"); plt.close(fig)
    made.append("latency_cdf.png")
    crash = [r for r in results if r["scenario"] == "primary-killed"]
    if crash:
        fig, ax = plt.subplots(figsize=(6, 4))
        for r in crash:
            ax.plot([i / 2 for i in range(len(r["tps_over_time"]))], r["tps_over_time"], label=f"{r['mode']} n={r['n']}")
        ax.axvline(5.0, color="grey", linestyle="--")
        ax.set_xlabel("seconds"); ax.set_ylabel("tx/s"); ax.set_title("Primary/leader killed at t = 5 s")
        ax.legend(); fig.tight_layout(); fig.savefig(out / "crash_timeline.png"); plt.close(fig)
        made.append("crash_timeline.png")
    return made


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="pbft n=4, paxos n=3 and PySyncObj only (about a minute)")
    p.add_argument("--channels", action="store_true",
                   help="measure what mutual TLS costs: pbft n=4 and paxos n=3 with TLS and with plaintext links, "
                        "alternating in one run (with --quick, once each)")
    p.add_argument("--attacks", action="store_true",
                   help="throughput under each attack of issue 12 as a ratio to fault-free, same run and load: "
                        "pbft n=4 at 64 (and 16) in flight, paxos n=3 crash faults (with --quick, 64 only; "
                        "under 4 minutes); writes OUT/attacks.{json,md,png}")
    p.add_argument("--json", metavar="PATH", help="where to write the JSON results (default: OUT/results.json)")
    p.add_argument("--out", metavar="DIR", default="bench/results", help="directory for the table and plots")
    a = p.parse_args(argv)
    try:
        import matplotlib  # noqa: F401
        import pysyncobj  # noqa: F401
    except ImportError as e:
        print(f"python -m bench: error: {e.name} is missing; install the bench extra "
              f"(pip install -e '.[bench]', or run 'make bench' / 'make bench-quick')", file=sys.stderr)
        return 1
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.attacks:
        from bench import attacks
        return attacks.main(a.quick, out, a.json)
    floor = crypto_floor()
    print(f"crypto floor: {floor['verifies_per_s_per_core']} Ed25519 verifies/s per core x {floor['cores']} cores "
          f"-> pbft {floor['pbft']} tx/s, paxos {floor['paxos']} tx/s", flush=True)
    todo = plan_channels(a.quick) if a.channels else plan(a.quick)
    results = []
    failed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bftbench-") as work:
        for i, (cfg, repeats) in enumerate(todo, 1):
            runs = []
            for k in range(repeats):
                print(f"[{i}/{len(todo)}] {cfg.mode} n={cfg.n} batch={cfg.batch_size} in-flight={cfg.in_flight} "
                      f"payload={cfg.payload_bytes} {cfg.scenario} links={cfg.transport} run {k + 1}/{repeats} ...",
                      flush=True)
                try:
                    runs.append(run(cfg, Path(work)))
                except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as e:
                    print(f"    run failed: {e}", flush=True)
            if not runs:
                failed.append(f"{cfg.mode} n={cfg.n} batch={cfg.batch_size} in-flight={cfg.in_flight} {cfg.scenario}")
                continue
            r = median_of(runs)
            print(f"    {r['throughput_tps']} tx/s, p50 {r['latency_ms']['p50']} ms", flush=True)
            results.append(r)
    if a.channels:
        results = merge_repeats(results)
    pysync = [r for r in results if r["mode"] == "pysyncobj" and r["scenario"] == "steady"]
    for r in results:
        if r["mode"] == "paxos":
            base = [b for b in pysync if b["in_flight"] == r["in_flight"]]
            if base and base[0]["throughput_tps"]:
                r["ratio_to_pysyncobj"] = round(r["throughput_tps"] / base[0]["throughput_tps"], 2)
    machine = {"python": platform.python_version(), "platform": platform.platform(), "cores": os.cpu_count()}
    doc = {"machine": machine, "crypto_floor_tps": {"pbft": floor["pbft"], "paxos": floor["paxos"]},
           "results": results}
    stem = "channels" if a.channels else "results"
    path = Path(a.json) if a.json else out / f"{stem}.json"
    path.write_text(json.dumps(doc, indent=1))
    md = table(results, floor)
    costs = channel_costs(results)
    if costs:
        md += "\n\n" + "\n".join(f"- {line}" for line in costs)
    (out / f"{stem}.md").write_text(md + "\n")
    print(md)
    made = [] if a.channels else plots(results, out)
    if failed:
        print(f"{len(failed)} configurations failed every run: {'; '.join(failed)}")
    print(f"wrote {path}, {out / f'{stem}.md'}" + (f", plots: {', '.join(made)}" if made else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

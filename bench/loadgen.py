"""A closed-loop load generator: one process, one client key, K requests in flight.

Run by the benchmark as a separate process so that the client's signing and the
replicas' work are on separate CPUs' accounts. Writes one JSON file: for every
completed request its completion time (seconds since start) and latency (ms).
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import trio


async def _run(a: argparse.Namespace) -> dict:
    import ledger.client

    value = b"v" * a.value_bytes
    done: list[tuple[float, float]] = []
    errors = 0
    async with ledger.client.connect(a.cluster, client=a.client) as cl:
        start = time.perf_counter()
        end = start + a.duration

        async def worker(w: int) -> None:
            nonlocal errors
            i = 0
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                try:
                    await cl.put(f"c{a.client}w{w}k{i % 64}", value)
                except Exception:
                    errors += 1
                    await trio.sleep(0.05)
                    continue
                t1 = time.perf_counter()
                done.append((t1 - start, (t1 - t0) * 1000.0))
                i += 1

        async with trio.open_nursery() as nursery:
            for w in range(a.in_flight):
                nursery.start_soon(worker, w)
    return {"completed": done, "errors": errors}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__)
    p.add_argument("--cluster", required=True)
    p.add_argument("--client", type=int, default=0)
    p.add_argument("--in-flight", type=int, default=16)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--value-bytes", type=int, default=64)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    res = trio.run(_run, a)
    with open(a.out, "w") as fh:
        json.dump(res, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A hostile client beside the benchmark's honest load (``python -m bench --attacks``).

One process, one client key of the cluster (or none: idle sockets need no key), attacking
every replica at once for ``--duration`` seconds with one of ``bft.app.hostile``'s tools:

- ``bad-signatures``: requests whose signatures are garbage, as fast as each replica reads;
- ``max-size``: validly signed puts of the largest size, as fast as each replica reads,
  never waiting for an answer;
- ``idle-sockets``: 1,000 TCP connections per replica that never send a byte.
"""
from __future__ import annotations

import argparse
import sys

import trio

from bft.app import hostile
from ledger.cluster import load

KINDS = ("bad-signatures", "max-size", "idle-sockets")
IDLE_PER_REPLICA = 1000


async def _run(a: argparse.Namespace) -> None:
    cluster = load(a.cluster)

    async def one(replica: int) -> None:
        if a.kind == "bad-signatures":
            await hostile.bad_signatures(cluster, replica, a.client, a.duration)
        elif a.kind == "max-size":
            with trio.move_on_after(a.duration):
                while True:                      # each round's timestamps are fresh
                    try:
                        await hostile.flood_requests(cluster, replica, a.client, 100_000)
                    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                        await trio.sleep(0.1)
        else:
            socks = []
            try:
                with trio.move_on_after(a.duration):
                    for _ in range(IDLE_PER_REPLICA):
                        try:
                            socks += await hostile.idle_sockets(cluster, replica, 1)
                        except OSError:
                            await trio.sleep(0.01)
                    await trio.sleep_forever()
            finally:
                for s in socks:
                    await trio.aclose_forcefully(s)

    async with trio.open_nursery() as n:
        for r in range(cluster.n):
            n.start_soon(one, r)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.hostile_load", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cluster", required=True)
    p.add_argument("--client", type=int, required=True, help="the client key to attack with")
    p.add_argument("--kind", choices=KINDS, required=True)
    p.add_argument("--duration", type=float, default=6.0)
    a = p.parse_args(argv)
    trio.run(_run, a)
    return 0


if __name__ == "__main__":
    sys.exit(main())

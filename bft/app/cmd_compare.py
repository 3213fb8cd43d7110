"""``bftledger compare DIR``: do the reachable replicas hold the same ledger? If not, where not.

Blocks are hash-linked, so two replicas that sign the same block hash at a height agree on
every block below it. The command asks every reachable replica for its signed attestation
(``Attestation``: height, block hash) at the highest height they all have; if those
differ, it bisects down to the first height where they differ. The answer is evidence: each
hash comes signed by the replica that claims it. A Paxos cluster with a lying leader ends up
here (its audits each say OK: every replica's ledger is well-formed, just not the same).
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field

from typing import TYPE_CHECKING

from bft.app.args import Subparsers, add_query_args, run_async

if TYPE_CHECKING:
    from ledger.cluster import Cluster


def add_compare(sub: Subparsers) -> None:
    p = sub.add_parser("compare", help="check that the reachable replicas hold the same ledger",
                       description="Ask every reachable replica of DIR for its signed block hash at the highest "
                                   "height they all hold and, if they differ, find the first height where they "
                                   "do. Exit status 0 when they agree, 1 when they differ or fewer than two "
                                   "replicas answer.")
    add_query_args(p, 3.0, "one JSON object")
    p.set_defaults(func=cmd_compare)


@dataclass
class Comparison:
    replicas: list[int]                      # the reachable ones compared
    heights: dict[int, int]
    common: int                              # the highest height all of them hold
    first_difference: int | None = None      # the first height where two of them differ
    hashes: dict[int, str | None] = field(default_factory=dict)   # at that height (or at ``common``)
    silent: list[int] = field(default_factory=list)               # reachable, but no valid attestation

    @property
    def agree(self) -> bool:
        return self.first_difference is None and not self.silent and len(self.replicas) >= 2

    def as_json(self) -> dict:
        return {"agree": self.agree, "replicas": self.replicas, "heights": {str(i): h for i, h in self.heights.items()},
                "common_height": self.common, "first_difference": self.first_difference,
                "hashes": {str(i): h for i, h in self.hashes.items()}, "no_attestation": self.silent}


async def compare(cluster: Cluster, client: int, signer, timeout: float) -> Comparison:
    import trio

    from ledger.net.session import ClientSession, query_status

    st = await query_status(cluster, client, signer, timeout)
    # a replica reports its own height: ignore one that is not a height (a liar's or a bug's)
    up = [s for s in st if s.get("reachable") and type(s.get("height")) is int and 0 <= s["height"] < 1 << 63]
    heights = {s["id"]: s["height"] for s in up}
    ids = sorted(heights)
    result = Comparison(ids, heights, min(heights.values(), default=0))
    if len(ids) < 2 or result.common == 0:
        return result
    verifier = cluster.verifier()
    session = ClientSession(cluster, client, signer)

    async def hashes_at(h: int) -> dict[int, str | None]:
        out: dict[int, str | None] = {}

        async def one(i: int) -> None:
            att = await session.fetch_attestation(i, h, timeout)
            good = (att is not None and att.height == h and att.replica == i
                    and att.verify(verifier, cluster.replicas[i].public_key))
            out[i] = att.block_hash.hex() if good else None
        async with trio.open_nursery() as nursery:
            for i in ids:
                nursery.start_soon(one, i)
        return out

    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.run)
        await session.wait_connected(len(ids), timeout)
        top = await hashes_at(result.common)
        result.silent = sorted(i for i, v in top.items() if v is None)
        result.hashes = top
        if len({v for v in top.values() if v is not None}) > 1:
            lo, hi = 1, result.common            # they differ at hi; find the first height that differs
            while lo < hi:
                mid = (lo + hi) // 2
                at = await hashes_at(mid)
                if len({v for v in at.values() if v is not None}) > 1:
                    hi = mid
                else:
                    lo = mid + 1
            result.first_difference = hi
            result.hashes = await hashes_at(hi)
        nursery.cancel_scope.cancel()
    return result


def cmd_compare(args: argparse.Namespace) -> int:
    from ledger.client import _resolve

    cluster, cid, signer = _resolve(args.dir, args.client)
    r = run_async(compare, cluster, cid, signer, args.timeout)
    if args.json:
        print(json.dumps(r.as_json(), indent=1))
        return 0 if r.agree else 1
    if len(r.replicas) < 2:
        print(f"only {len(r.replicas)} replica(s) of {cluster.n} answered: nothing to compare")
        return 1
    if r.first_difference is not None:
        print(f"the replicas DISAGREE: their ledgers first differ at height {r.first_difference}")
        for i, h in sorted(r.hashes.items()):
            print(f"  replica {i}: block {h[:16] if h else '(no valid attestation)'}")
        return 1
    if r.silent:
        print(f"replicas {', '.join(map(str, r.silent))} gave no valid signed hash at height {r.common}: "
              "they may lie or lag")
        return 1
    some = next(iter(r.hashes.values()))
    print(f"all {len(r.replicas)} reachable replicas hold the same ledger up to height {r.common} "
          f"(block {some[:16] if some else '?'}); heights: "
          + ", ".join(f"{i}:{h}" for i, h in sorted(r.heights.items())))
    return 0

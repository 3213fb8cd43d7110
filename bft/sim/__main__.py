"""Replay one seeded simulator run: ``python -m bft.sim --mode pbft --n 4 --seed 17``."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bft.sim", description=__doc__)
    p.add_argument("--mode", choices=["pbft", "paxos"], default="pbft")
    p.add_argument("--n", type=int, default=4, help="replicas (pbft: 3f+1, paxos: 2f+1)")
    p.add_argument("--seed", type=int, required=True, help="the seed a failing test printed")
    p.add_argument("--no-faults", action="store_true", help="a clean network (no loss, partition or crash)")
    p.add_argument("--trace", action="store_true", help="print every delivered message")
    p.add_argument("--faulty-primary", action="store_true",
                   help="pbft: the view-0 primary is among the faulty replicas")
    p.add_argument("--twins", action="store_true",
                   help="pbft: one sampled Twins scenario (n=4 plus one twin, per round a leader and a partition)")
    p.add_argument("--byzantine", action="append", default=[], metavar="ID=STRATEGY",
                   help="pbft: replica ID runs a strategy of bft.adversary (repeat for more); "
                        "'bftledger attacks' lists them, 'bftledger lab' explains a run")
    a = p.parse_args(argv)
    byzantine = {}
    for item in a.byzantine:
        rid, _, strategy = item.partition("=")
        from bft.adversary import STRATEGIES
        if not rid.isdigit() or not 0 <= int(rid) < a.n or strategy not in STRATEGIES:
            p.error(f"--byzantine {item!r}: expected ID=STRATEGY with ID in 0..{a.n - 1} and a strategy of "
                    f"'bftledger attacks'")
        byzantine[int(rid)] = strategy
    if byzantine and (a.mode != "pbft" or a.twins or a.faulty_primary):
        p.error("--byzantine goes with --mode pbft, without --twins or --faulty-primary "
                "(for paxos: 'bftledger lab ATTACK --mode paxos')")
    if a.mode == "pbft" and a.twins:
        from bft.sim.twins import run_twins
        res = run_twins(a.seed, trace=a.trace)
    elif a.mode == "pbft":
        from bft.sim.scenario import run_pbft
        res = run_pbft(a.seed, a.n, faults=not a.no_faults, trace=a.trace, faulty_primary=a.faulty_primary,
                       byzantine=byzantine or None)
    else:
        from bft.sim.paxos_scenario import run_paxos
        res = run_paxos(a.seed, a.n, faults=not a.no_faults, trace=a.trace)
    if a.trace and getattr(res, "trace", None):
        print("\n".join(res.trace))
    print(res.describe())
    print(f"  {res.events} deliveries, {res.blocks} blocks, messages sent: {res.sent}")
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())

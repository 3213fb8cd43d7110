"""What the authenticated state costs: per write, per proof, by state size and block size.

Writes go through ``KVStore.apply`` as the chain executes them, and the root is asked for
once per block, as ``Chain.execute`` does. The tree's cost per write (``tree_us``) is
bringing it up to date (``sync_us``: hashing the value, one search and restructuring
per key written) plus rehashing the nodes that changed (``rehash_us``, each once per
block); ``apply_us`` is executing the operation itself (parsing, the dict), as before
issue 16. Proofs: the mean size of an
encoded presence proof and the time to verify one. Times are this thread's CPU time
(``time.thread_time``), the best of ``--repeat`` runs, so other load on the machine
inflates them less.

    python -m bench.state_cost [--keys 1000,100000] [--batches 1,16,128] [--json]
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time

from ledger.state import KVStore, op_put

_clock = time.thread_time


def measure(keys: int, batch: int, writes: int = 20000, repeat: int = 3, seed: int = 1) -> dict:
    rng = random.Random(seed)
    names = [f"user:{i:08d}" for i in range(keys)]
    ops = [op_put(names[rng.randrange(keys)], rng.randbytes(64)) for _ in range(writes)]
    best: dict[str, float] = {}
    for _ in range(repeat):
        kv = KVStore()
        for k in names:
            kv.apply(op_put(k, b"initial"))
        kv.root()
        t_apply = t_sync = t_rehash = 0.0
        for start in range(0, writes, batch):
            block = ops[start:start + batch]
            t0 = _clock()
            for op in block:
                kv.apply(op)
            t1 = _clock()
            kv._sync()
            t2 = _clock()
            kv.root()
            t3 = _clock()
            t_apply += t1 - t0
            t_sync += t2 - t1
            t_rehash += t3 - t2
        for name, v in (("apply", t_apply), ("sync", t_sync), ("rehash", t_rehash)):
            best[name] = min(best.get(name, v), v)
    per = 1e6 / writes
    probe = [names[rng.randrange(keys)] for _ in range(200)]
    proofs = [kv.prove(k) for k in probe]
    root = kv.root()
    t0 = _clock()
    for p in proofs:
        p.verify(root)
    verify_us = (_clock() - t0) * 1e6 / len(proofs)
    return {"keys": keys, "batch": batch, "apply_us": round(best["apply"] * per, 2),
            "sync_us": round(best["sync"] * per, 2), "rehash_us": round(best["rehash"] * per, 2),
            "tree_us": round((best["sync"] + best["rehash"]) * per, 2),
            "depth": kv._tree.depth(), "proof_steps": round(sum(len(p.path) for p in proofs) / len(proofs), 1),
            "proof_bytes": round(sum(len(p.encode()) for p in proofs) / len(proofs)),
            "verify_us": round(verify_us, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.state_cost", description=__doc__.split("\n\n")[0])
    p.add_argument("--keys", default="1000,100000", help="state sizes (default 1000,100000)")
    p.add_argument("--batches", default="1,16,128", help="writes per block (default 1,16,128)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    a = p.parse_args(argv)
    rows = [measure(k, b) for k in (int(x) for x in a.keys.split(",")) for b in (int(x) for x in a.batches.split(","))]
    if a.json:
        print(json.dumps(rows, indent=2))
        return 0
    print("authenticated state: CPU us per write (64-byte values), root once per block")
    print(f"{'keys':>8} {'batch':>6} {'tree':>7} {'sync':>7} {'rehash':>7} {'apply':>7} {'depth':>6} "
          f"{'proof steps':>12} {'proof bytes':>12} {'verify us':>10}")
    for r in rows:
        print(f"{r['keys']:>8} {r['batch']:>6} {r['tree_us']:>7} {r['sync_us']:>7} {r['rehash_us']:>7} "
              f"{r['apply_us']:>7} {r['depth']:>6} {r['proof_steps']:>12} {r['proof_bytes']:>12} {r['verify_us']:>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The Jepsen-style workload: clients doing put/get/cas on a few keys, every operation
recorded with its invocation and completion time (a timed-out one is indeterminate), for
tests/linearizability.py to check.

Gets are mostly plain ``get``s, which are not ordered (issue 15), and one in four is
``get(linearizable=True)``. The nemeses here partition, pause and kill replicas but make
none of them lie, and with no faulty replica both kinds of get are linearizable (README,
"Reads"): the checker tests that claim for the reads users make by default, not only for
ordered ones. Against a lying pbft replica a plain get is not linearizable; no test here
runs one."""
from __future__ import annotations

import random

import trio

import ledger.client
from tests.linearizability import CAS, GET, PUT, Op

KEYS = ["k0", "k1", "k2", "k3"]


async def client_loop(lc, cid: int, seed: int, history: list[Op], stop: trio.Event, clients: int,
                      timeout: float = 3.0) -> None:
    rng = random.Random(f"{seed}-{cid}")
    keys = [f"{seed}/{k}" for k in KEYS]             # a fresh register per run: the checker starts at None
    async with ledger.client.connect(lc.directory, client=cid, timeout=timeout) as c:
        i = 0
        while not stop.is_set():
            key, kind = rng.choice(keys), rng.choice([PUT, GET, CAS])
            op = Op(key, kind, trio.current_time(), client=cid)
            try:
                if kind == PUT:
                    op.value = b"%d-%d" % (cid, i)
                    await c.put(key, op.value)
                elif kind == GET:
                    op.result = await c.get(key, linearizable=rng.random() < 0.25)
                else:
                    op.expected = rng.choice([None, b"%d-%d" % (rng.randrange(clients), rng.randrange(i + 1))])
                    op.value = b"c%d-%d" % (cid, i)
                    op.result = (await c.cas(key, op.expected, op.value)).ok
                op.complete = trio.current_time()
            except (ledger.client.Unavailable, ledger.client.ReceiptUnavailable):
                pass                                        # indeterminate: complete stays infinite
            history.append(op)
            i += 1


async def under_load(lc, clients: int, seed: int, nemesis) -> list[Op]:
    """Run ``clients`` client loops (client ids 1..clients) while ``await nemesis()`` runs; the
    history of every operation."""
    history: list[Op] = []
    stop = trio.Event()
    async with trio.open_nursery() as n:
        for cid in range(1, clients + 1):
            n.start_soon(client_loop, lc, cid, seed, history, stop, clients)
        try:
            await nemesis()
        finally:
            stop.set()
    return history


def dropped(status: dict, rule) -> int:
    """How many messages a replica's ``status --json`` says it dropped under ``rule``."""
    return status["dropped"].get(rule.label, {}).get("total", 0)

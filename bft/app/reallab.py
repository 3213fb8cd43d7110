"""``bftledger lab ATTACK --real``: the same lab on real replica processes on 127.0.0.1.

The simulator's lab (``bft.sim.lab``) is deterministic and checks every step; this one shows
that the attack and the rules that stop it are the same on the real runtime: real processes
started with ``bftledger replica --byzantine STRATEGY`` (``--byzantine collude --group ...``
for a team), real TLS links, real signatures and real files. Two honest clients (0 and 1)
write a steady load through ``ledger.client``; a hostile client (2) runs the client attacks
over its own authenticated connections.

What it reports, from what the replicas themselves say: the drops, by rule and by sender,
from each honest replica's ``status``; safety, by reading every honest replica's ledger from
disk once the processes have stopped (the first height where two differ) and auditing each;
liveness, by whether every honest request got its receipt before the deadline. A real run
is not replayable step by step (the network's timing is the machine's), so the replay
command it prints reruns the same attack, load and seed, not the same interleaving.

Network attacks (partitions, lost messages) need control of the network, which the
simulator has and a local machine does not without network namespaces: they are refused
here with a pointer to the simulator.
"""
from __future__ import annotations

import random
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import trio

from bft.adversary import PAXOS_STRATEGIES, STRATEGIES, TEAM_STRATEGY, applies
from bft.app.args import run_async
from bft.runtime.procs import LocalCluster
from bft.sim.lab import HOSTILE, IN_VIEW_CHANGE, STORIES, LabError, LabResult, attackers
from bft.wire import Prepare, Request
from ledger import quorum
from ledger.state import op_put

REAL_CLIENT_ATTACKS = ("bad-signatures", "impersonate-client", "client-sends-protocol", "client-flood")
REQUESTS = 40                   # honest requests, as in the simulator's lab
DEADLINE = 45.0                 # seconds for the honest load to be acknowledged
OP_TIMEOUT = 20.0               # one request's client timeout
PAUSE = (0.3, 2.3)              # replica 0 frozen (the attacks that act in a view change)
READ_ATTACKS = ("lying-reads",)  # the load reads each put back without ordering
PROOF_ATTACKS = ("lying-proofs",)  # the load reads each put back with a proof (get_verified)


def real_attacks(mode: str) -> list[str]:
    """What ``--real`` runs in ``mode``."""
    out = [s for s in STRATEGIES if applies(s, mode)] + list(REAL_CLIENT_ATTACKS)
    if quorum.protocol(mode).byzantine:
        out.append(TEAM_STRATEGY)
    return out + [s for s in STORIES if mode == "pbft" or STORIES[s] in PAXOS_STRATEGIES]


def run_real_lab(name: str, *, mode: str = "pbft", f: int = 1, count: int = 1, seed: int = 1,
                 trace: bool = False, keep: str | None = None) -> tuple[LabResult, list[dict]]:
    """Run attack ``name`` on real processes; the result and, with ``trace``, the replicas'
    merged trace events (``bft.runtime.tracelog``)."""
    if name not in real_attacks(mode):
        if name in STRATEGIES or name == TEAM_STRATEGY or name in STORIES:
            raise LabError(f"{name!r} does not apply to {mode}")
        raise LabError(f"--real runs replica strategies and client attacks ({', '.join(REAL_CLIENT_ATTACKS)}); "
                       f"{name!r} needs control of the network, which only the simulator has: drop --real")
    proto = quorum.protocol(mode)
    n = proto.n(f)
    if not 1 <= count < n:
        raise LabError(f"--byzantine-count must be between 1 and {n - 1} for n={n}")
    kind = "client" if name in REAL_CLIENT_ATTACKS else "replica"
    faulty = attackers(name, mode, n, count) if kind == "replica" else []
    if kind == "client" and count != 1:
        raise LabError("--byzantine-count counts Byzantine replicas; a client attack has one hostile client")
    work = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="bftledger-lab-"))
    try:
        # SIGTERM as Ctrl-C: the replicas are stopped (a frozen one thawed first) and the directory removed
        return run_async(_run, name, kind, mode, n, f, count, seed, faulty, work, trace, sigterm=True)
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)


async def _run(name: str, kind: str, mode: str, n: int, f: int, count: int, seed: int, faulty: list[int],
               work: Path, trace: bool) -> tuple[LabResult, list[dict]]:
    from bft.app.clusterinit import init_cluster
    from bft.runtime.tracelog import read_events

    from bft.runtime.factory import write_tuning
    from bft.sim.lab import SCENARIOS

    d = work / "cluster"
    init_cluster(d, mode, f, clients=3)
    write_tuning(d, SCENARIOS[name].config if name in SCENARIOS else {})
    strategy = STORIES.get(name, name)
    byzantine = {i: strategy for i in faulty}
    extra: dict[int, list[str]] = {i: [] for i in range(n)}
    if name == TEAM_STRATEGY:
        for i in faulty:
            extra[i] += ["--group", ",".join(map(str, faulty))]
    traces = [work / f"trace-r{i}.jsonl" for i in range(n)]
    if trace:
        for i in range(n):
            extra[i] += ["--trace-log", str(traces[i])]
    notes = ["real processes on 127.0.0.1: the seed fixes the load and the attack, not the network's timing"]
    if len(faulty) > f:
        notes.append(f"{len(faulty)} Byzantine replicas exceed f={f}: {mode} promises nothing beyond f")
    lc = LocalCluster(d)
    honest = [i for i in range(n) if i not in faulty]
    with lc:
        lc.start(byzantine=byzantine, extra=extra)
        await lc.ready(timeout=30)
        t0 = time.time()
        acked = [0]
        reads: list[str] | None = [] if name in READ_ATTACKS + PROOF_ATTACKS else None   # wrong values accepted
        proofs: list[int] | None = [0, 0] if name in PROOF_ATTACKS else None  # verified reads, forged proofs refused
        async with trio.open_nursery() as nursery:
            if name in IN_VIEW_CHANGE:
                nursery.start_soon(_pause_primary, lc, notes)
            if kind == "client":
                nursery.start_soon(_client_attack, name, lc, n, random.Random(f"lab-real-{seed}"), notes)
            with trio.move_on_after(DEADLINE):
                async with trio.open_nursery() as load:
                    for c in (0, 1):
                        load.start_soon(_load, lc, c, seed, acked, reads, proofs)
        # let late messages land (a lagging replica catches up) before the counters are read
        try:
            await lc.converged(honest, timeout=5)
        except TimeoutError:
            pass
        statuses = await lc.status(3.0)
    result = _result(name, kind, mode, n, f, count, seed, faulty, honest, statuses, d, acked[0], notes)
    if proofs is not None:
        notes.append(f"after each put, its client reads the key back with a proof (get_verified): {proofs[0]} "
                     f"verified reads, each proof checked offline; {proofs[1]} forged answers refused (not attested "
                     f"by f+1); {len(reads)} reads returned a value nobody wrote")
    elif reads is not None:
        notes.append(f"after each put, its client reads the key back without ordering: {len(reads)} of those "
                     f"reads returned a value nobody wrote")
        if reads and result.violation is None:
            result.violation = reads[0]
    events = read_events(traces) if trace else []
    for ev in events:
        ev["t"] -= t0
    return result, events


async def _pause_primary(lc: LocalCluster, notes: list[str]) -> None:
    """Freeze replica 0 (SIGSTOP, by the PID this lab started) for a while: to its peers the
    primary falls silent, as when the simulator cuts it off, and they change views."""
    import os
    import signal

    await trio.sleep(PAUSE[0])
    pid = lc.pid(0)
    if pid is None:
        return
    os.kill(pid, signal.SIGSTOP)
    try:
        await trio.sleep(PAUSE[1] - PAUSE[0])
    finally:
        os.kill(pid, signal.SIGCONT)
    notes.append(f"replica 0 (the first primary) is frozen (SIGSTOP) from t={PAUSE[0]} s to t={PAUSE[1]} s, to cause "
                 "the view change this attack acts in")


async def _load(lc: LocalCluster, client: int, seed: int, acked: list[int], reads: list[str] | None = None,
                proofs: list[int] | None = None) -> None:
    """Client ``client``'s half of the honest load: puts one after another, as in the simulator;
    with ``reads``, each put is read back without ordering (with ``proofs``: with a proof,
    verified offline, counting the reads and the forged answers refused), and a value that
    no put wrote is noted there (the two clients write the same keys, so the other's value
    is fine)."""
    import ledger.client

    rng = random.Random(f"lab-real-load-{seed}-{client}")
    async with ledger.client.connect(lc.directory, client=client, timeout=OP_TIMEOUT) as c:
        for j in range(client, REQUESTS, 2):
            await trio.sleep(rng.uniform(0, 0.05))
            try:
                await c.put(f"k{j % 7}", b"v%d" % j)
                acked[0] += 1
                if proofs is not None:
                    before = c.read_proofs_rejected
                    p = await c.get_verified(f"k{j % 7}")
                    proofs[1] += c.read_proofs_rejected - before
                    try:
                        p.verify(lc.directory)
                    except ledger.client.ReadProofError as e:
                        reads.append(f"client {client} accepted a read proof that does not verify offline: {e}")
                    value = p.value
                    proofs[0] += 1
                elif reads is not None:
                    value = await c.get(f"k{j % 7}")
                if reads is not None:
                    if value not in {b"v%d" % i for i in range(j % 7, REQUESTS, 7)}:
                        reads.append(f"client {client} accepted {value!r} for 'k{j % 7}', a value nobody wrote")
            except ledger.client.LedgerError:
                pass


async def _client_attack(name: str, lc: LocalCluster, n: int, rng: random.Random, notes: list[str]) -> None:
    from bft.app import hostile
    from ledger.wire import frame

    cluster = lc.cluster
    if name == "bad-signatures":
        notes.append("client 2 sends requests with garbage signatures to every replica for 2 s")
        async with trio.open_nursery() as nursery:
            for r in range(n):
                nursery.start_soon(hostile.bad_signatures, cluster, r, HOSTILE, 2.0)
        return
    if name == "client-flood":
        notes.append("client 2 sends 60 valid 512-byte puts at once to every replica")
        async with trio.open_nursery() as nursery:
            for r in range(n):
                nursery.start_soon(lambda r=r: hostile.flood_requests(cluster, r, HOSTILE, 60, value=bytes(512)))
        return
    if name == "impersonate-client":
        notes.append("client 2, on its own authenticated connection, sends requests that name client 0")
        msgs = [Request(0, 5000 + k, op_put("stolen", b"%d" % k), rng.randbytes(64)) for k in range(10)]
    else:
        notes.append("client 2 sends PREPAREs in replica 1's name")
        msgs = [Prepare(0, 1 + k, rng.randbytes(32), 1, rng.randbytes(64)) for k in range(10)]
    for r in range(n):
        s = await hostile.authenticated(cluster, r, HOSTILE)
        try:
            for m in msgs:
                await s.send_all(frame(m.encode()))
            await trio.sleep(0.5)             # the replica reads them before the connection closes
        finally:
            await trio.aclose_forcefully(s)


def _result(name: str, kind: str, mode: str, n: int, f: int, count: int, seed: int, faulty: list[int],
            honest: list[int], statuses: list[dict], d: Path, acked: int, notes: list[str]) -> LabResult:
    by_rule: Counter[str] = Counter()
    by_sender: dict[str, Counter[str]] = {}
    suspicions: Counter[str] = Counter()
    for i in honest:
        st = statuses[i]
        if not st.get("reachable", True) or "dropped" not in st:
            notes.append(f"replica {i} did not answer the last status query: its drops are not counted")
            continue
        for label, dd in st["dropped"].items():
            by_rule[label] += dd.get("total", 0)
            for who, k in dd.get("by_sender", {}).items():
                by_sender.setdefault(label, Counter())[who] += k
        for label, k in (st.get("transport_problems") or {}).items():
            if isinstance(k, int):
                by_rule[label] += k
        for label, k in (st.get("suspicions") or {}).items():
            if isinstance(k, int):
                suspicions[label] += k
    divergence, violation = _ledgers(d, honest)
    replay = (f"bftledger lab {name} --real --mode {mode} --f {f}"
              + (f" --byzantine-count {count}" if count != 1 else "") + f" --seed {seed}")
    heights = {i: st.get("height", 0) for i, st in enumerate(statuses)}
    views = {i: statuses[i].get("view", statuses[i].get("ballot", 0)) for i in honest}
    return LabResult(name, kind, mode, n, f, seed, faulty, violation, REQUESTS - acked, REQUESTS,
                     dict(sorted(by_rule.items())), {k: dict(sorted(v.items())) for k, v in sorted(by_sender.items())},
                     dict(sorted(suspicions.items())), heights, views, replay, notes, divergence, real=True)


def _ledgers(d: Path, honest: list[int]) -> tuple[dict, str | None]:
    """Read the honest replicas' ledgers from disk (the processes have stopped): the first
    height where two differ, and each replica's audit."""
    from ledger.audit import audit
    from ledger.cluster import load
    from ledger.store import BlockStore

    cluster = load(d)
    chains: dict[int, list] = {}
    bad: str | None = None
    for i in honest:
        with BlockStore.open(cluster.data_dir(i), create=False) as store:
            chains[i] = list(store.blocks())
        rep = audit(d, i)
        if not rep.ok and bad is None:
            bad = f"the audit of honest replica {i} fails at height {rep.first_bad_height}: {rep.reason}"
    top = max((len(c) for c in chains.values()), default=0)
    for h in range(top):
        there = {i: c[h] for i, c in chains.items() if len(c) > h}
        if len({b.hash() for b in there.values()}) > 1:
            blocks = {str(i): {"block": b.hash().hex()[:16], "batch_root": b.batch_root.hex()[:16],
                               "transactions": len(b.txs)} for i, b in there.items()}
            return ({"height": h + 1, "blocks": blocks},
                    f"honest replicas {', '.join(map(str, there))} hold different blocks at height {h + 1}")
    return {}, bad

"""The replica's side of verified reads (``bft.runtime.proofs``) over a real block store:
proofs at the current and past heights lead to the served header's state root, past
states are rebuilt within the replay bound and refused beyond it with the reason, every
refusal is counted, and ``lying-proofs`` signs the header it forged."""
from __future__ import annotations

import msgpack
import pytest

import bft.runtime.proofs as proofs
from bft.app.clusterinit import init_cluster
from bft.app.demo_offline import OfflineLedger
from bft.runtime.proofs import ProofServer
from bft.wire import ProofRequest, ProofResponse, decode
from ledger import state
from ledger.block import header_hash, parse_header
from ledger.cluster import load
from ledger.net.transport import Problems
from ledger.rules import WireRule
from ledger.statetree import StateProof
from ledger.store import BlockStore
from ledger.wire import REBUILDING


class Sink:
    """Where the server's frames go (a connection's send side, kept for reading)."""
    name = "client 0"

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def send(self, fr: bytes) -> None:
        self.frames.append(fr)

    def last(self) -> ProofResponse:
        return decode(self.frames[-1][4:])


@pytest.fixture
def store(tmp_path):
    init_cluster(tmp_path / "c", "pbft", 1, clients=1)
    led = OfflineLedger(load(tmp_path / "c"))
    s = BlockStore.open(tmp_path / "store", fsync=False)
    for i in range(1, 11):                                  # "x" is i after block i; "gone" deleted at 6
        ops = [state.op_put("x", str(i).encode())]
        ops.append(state.op_put("gone", b"here") if i < 6 else state.op_delete("gone"))
        s.append(led.commit([led.request(0, op) for op in ops]))
    s.close()
    s = BlockStore.open(tmp_path / "store", fsync=False)     # recovery rebuilds its chain, as a replica's
    yield s
    s.close()


def _ask(server: ProofServer, key: bytes, height: int) -> ProofResponse:
    sink = Sink()
    server.serve(sink, ProofRequest(1, height, key))
    return sink.last()


def _value(m: ProofResponse) -> bytes | None:
    header = msgpack.unpackb(m.header)
    root = parse_header(header)[-1]
    return StateProof.decode(m.proof).verify(root)


def test_current_and_past_states_are_proven_against_the_served_header(store) -> None:
    problems = Problems()
    server = ProofServer(0, store, problems, lambda s: False, lambda *a: None)
    now = _ask(server, b"x", 0)
    assert now.height == 10 and _value(now) == b"10" and len(now.cert) == 3 and now.batch_size == 2
    for h in (3, 4, 9, 5):
        m = _ask(server, b"x", h)
        assert m.height == h and _value(m) == str(h).encode()
    assert _value(_ask(server, b"gone", 5)) == b"here" and _value(_ask(server, b"gone", 6)) is None
    assert server.cost(ProofRequest(2, 8, b"x")) == 1 + 1                     # kept at 6: re-executes 7, 8
    assert server.cost(ProofRequest(2, 4, b"x")) == 1 + 2                     # below it: 1..4, half a token each
    assert server.cost(ProofRequest(2, 0, b"x")) == 1
    assert problems.counts[WireRule.PROOF_REFUSED] == 0


def test_refusals_say_why_and_are_counted(store) -> None:
    problems = Problems()
    server = ProofServer(0, store, problems, lambda s: False, lambda *a: None)
    why = {}
    for name, key, h in (("above", b"x", 11), ("not utf-8", b"\xff", 0), ("empty", b"", 0)):
        m = _ask(server, key, h)
        assert m.height == 0 and m.proof == b"" and m.refusal
        why[name] = m.refusal.decode()
    assert "above this replica's height 10" in why["above"]
    assert "UTF-8" in why["not utf-8"] and "1 to 1024" in why["empty"]
    assert problems.counts[WireRule.PROOF_REFUSED] == 3
    assert server.cost(ProofRequest(2, 11, b"x")) == 1


def test_a_far_past_state_is_rebuilt_a_bounded_part_per_query(store) -> None:
    server = ProofServer(0, store, Problems(), lambda s: False, lambda *a: None, replay_blocks=3,
                         replay_txs=5)                     # 2 transactions a block: 3 blocks a query
    m = _ask(server, b"x", 8)
    assert m.height == 0 and m.refusal.startswith(REBUILDING) and b"up to height 3" in m.refusal
    assert b"up to height 6" in _ask(server, b"x", 8).refusal            # it goes on from where it got to
    assert _value(_ask(server, b"x", 8)) == b"8"
    assert _value(_ask(server, b"x", 9)) == b"9"                           # one more block: within a query
    server.replay_txs = 1
    assert b"up to height 1" in _ask(server, b"x", 4).refusal              # below the kept one: from block 1


def test_lying_proofs_forges_the_header_and_attests_to_it(store) -> None:
    signed = []
    server = ProofServer(3, store, Problems(), lambda s: s == "lying-proofs", lambda *a: signed.append(a))
    lie = _ask(server, b"x", 0)
    header = msgpack.unpackb(lie.header)
    assert _value(lie) == proofs.LIE
    assert signed == [(10, header_hash(header), 2)]
    honest = ProofServer(0, store, Problems(), lambda s: False, lambda *a: None)
    assert header_hash(header) != header_hash(msgpack.unpackb(_ask(honest, b"x", 0).header))
    assert _value(_ask(server, b"x", 0)) is None                       # the next lie: absence


def test_a_store_damaged_under_a_running_replica_is_counted_by_every_server_never_raised(store, tmp_path) -> None:
    """StoreCorrupt is a StoreError, not a ValueError: every handler that reads the store on a
    client's or a peer's behalf (receipts, attestations, streams, proofs, state transfer)
    counts it as a local fault instead of raising into the connection or the driver loop."""
    from bft.outputs import ServeBlocks
    from bft.runtime.serving import BlockServer
    from bft.wire import AttestRequest, ReceiptRequest
    from ledger.net.transport import LocalFault
    from ledger.wire import BlocksRequest

    (seg,) = store.segment_paths
    with open(seg, "r+b") as f:                               # the second half of the blocks is lost
        f.truncate(seg.stat().st_size // 2)
    server = BlockServer(0, load(tmp_path / "c").load_replica_key(0), store, Problems(), lambda s: False)
    sink = Sink()
    server.receipt(sink, ReceiptRequest(10, 0))
    server.attest(sink, AttestRequest(10))
    server.stream(sink, BlocksRequest(1, 1, 64))
    server.prove(sink, ProofRequest(1, 10, b"x"))
    assert server.blocks(ServeBlocks(1, 1, 10)) is None
    assert sink.frames == []
    counts = server.problems.counts
    assert [counts[f] for f in (LocalFault.CANNOT_SERVE_RECEIPT, LocalFault.CANNOT_ATTEST,
                                LocalFault.CANNOT_SERVE_BLOCKS, LocalFault.CANNOT_SERVE_PROOF)] == [1, 1, 2, 1]


async def test_the_slow_strategy_sends_every_frame_late_in_order(autojump_clock) -> None:
    import trio

    from bft.runtime.serving import SlowSender

    slow, sent = SlowSender(2.0), []

    class Target:
        def send(self, fr: bytes) -> None:
            sent.append((trio.current_time() - start, fr))

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(slow.run)
        slow.schedule(Target(), b"a")
        await trio.sleep(0.5)
        slow.schedule(Target(), b"b")
        slow.schedule(Target(), b"c")
        await trio.sleep(5)
        nursery.cancel_scope.cancel()
    assert [(round(t, 3), fr) for t, fr in sent] == [(2.0, b"a"), (2.5, b"b"), (2.5, b"c")]

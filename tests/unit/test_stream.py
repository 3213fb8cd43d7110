"""What a block stream accepts from a replica's answer (``ledger.stream.BlockStream._accept``),
with real signed blocks: the good prefix is kept, the first bad block and all after it are
dropped and the replica benched, and nothing is ever buffered twice or out of order."""
from __future__ import annotations

from pathlib import Path

import pytest
import trio

from bft.app.clusterinit import init_cluster
from ledger.block import Block
from ledger.cluster import load
from ledger.stream import BlockStream, Lagging
from ledger.wire import BlocksResponse
from tests.unit.test_audit import build


@pytest.fixture
def blocks(tmp_path: Path) -> tuple[Path, list[Block]]:
    d = tmp_path / "c"
    init_cluster(d, "pbft", 1, clients=4)
    return d, build(d, 0, 5)


def accept(d: Path, served: list[Block], *, from_height: int = 1, raw: list[bytes] | None = None) -> BlockStream:
    s = BlockStream(load(d), None, from_height)            # no session: _accept never fetches

    async def run() -> None:
        anchor = from_height > 1
        s._accept(2, BlocksResponse(1, from_height - anchor, 9, raw or [b.encode() for b in served]), anchor)

    trio.run(run)
    return s


def test_good_blocks_are_buffered_in_order(blocks) -> None:
    d, bs = blocks
    s = accept(d, bs)
    assert [b.height for b in s._buf] == [1, 2, 3, 4, 5] and not s.rejected
    s = accept(d, bs[2:], from_height=4)                    # block 3 is the anchor, not yielded
    assert s._prev.height == 3 and [b.height for b in s._buf] == [4, 5]


@pytest.mark.parametrize("fault, why", [
    ("cert", "certificate"), ("link", "previous-block hash"), ("height", "where 3 was asked"),
    ("tx", "batch root"), ("junk", "does not decode")])
def test_the_first_bad_block_and_what_follows_are_refused(blocks, fault: str, why: str) -> None:
    d, bs = blocks
    bad = Block.decode(bs[2].encode())
    raw = None
    if fault == "cert":
        bad.cert = bad.cert[:2]
    elif fault == "link":
        bad.prev_hash = bytes(32)
    elif fault == "height":
        bad = bs[3]
    elif fault == "tx":
        bad.txs = [bs[1].txs[0]] + bad.txs[1:]
    served = bs[:2] + [bad] + bs[3:]
    if fault == "junk":
        raw = [b.encode() for b in bs[:2]] + [b"\xc1junk"] + [b.encode() for b in bs[3:]]
    s = accept(d, served, raw=raw)
    assert [b.height for b in s._buf] == [1, 2]
    assert len(s.rejected) == 1 and why in s.rejected[0] and s.rejected[0].startswith("replica 2:"), s.rejected
    assert 2 in s._bench


def test_lagging_names_where_to_resume(blocks) -> None:
    d, bs = blocks
    s = BlockStream(load(d), None, 1, max_lag=1)
    s.head = 5
    s._buf.extend(bs)

    async def run() -> list[int]:
        out = []
        with pytest.raises(Lagging) as e:
            while True:
                out.append((await s.__anext__()).height)
        assert e.value.resume_from == len(out) + 1 and e.value.head == 5
        return out

    assert trio.run(run) == []                    # 5 behind at the start: told before anything
    s.max_lag = 5

    async def then() -> None:
        assert (await s.__anext__()).height == 1     # 5 behind: within the limit
        s.head = 9                                   # the head moved on faster than the subscriber reads
        with pytest.raises(Lagging) as e:
            await s.__anext__()
        assert (e.value.resume_from, e.value.head) == (2, 9) and len(s._buf) == 4   # nothing dropped

    trio.run(then)
    with pytest.raises(ValueError):
        BlockStream(load(d), None, 0)


def test_a_replica_that_forges_results_under_a_valid_certificate_is_caught_by_the_attestations(blocks) -> None:
    """The certificate signs the batch, not the results or the state root: a replica can serve
    a block with forged results (roots made to match) that still carries a valid certificate.
    Before yielding, the stream has the last block's hash attested (f+1 replicas in pbft);
    a forged hash is not, so the batch is dropped, the replica benched, and the blocks come
    from another replica instead. (The network is a stand-in; the stream and the blocks are
    real.)"""
    from dataclasses import replace

    from crypto.merkle import root_of
    from ledger.receipt import ReceiptError
    from ledger.state import OK, encode_result

    d, bs = blocks
    last = bs[-1]
    results = [encode_result(OK, b"forged")] * len(last.results)
    forged = replace(last, results=results, results_root=root_of(results))
    assert forged.check_roots() is None and forged.hash() != last.hash()
    honest = {b.hash() for b in bs}
    attested: list[int] = []

    async def attest(height: int, block_hash: bytes, batch_size: int) -> None:
        if block_hash not in honest:                  # the honest replicas never signed this hash
            raise ReceiptError(f"only 1 replica attested block {height}'s hash, a receipt needs 2")
        attested.append(height)

    class Network:                                    # replica 0 lies, replica 1 does not
        class Link:
            connected = True
        links = [Link(), Link(), Link(), Link()]

        async def fetch_blocks(self, replica: int, from_height: int, max_blocks: int, timeout: float):
            served = bs[:-1] + ([forged] if replica == 0 else [last])
            return BlocksResponse(1, from_height, len(bs), [b.encode() for b in served[from_height - 1:]])

    s = BlockStream(load(d), Network(), 1, attest=attest)

    async def run() -> list[Block]:
        return [await s.__anext__() for _ in range(len(bs))]

    got = trio.run(run)
    assert [b.hash() for b in got] == [b.hash() for b in bs]             # the true blocks, each once
    assert any("replica 0" in r and "not attested" in r for r in s.rejected), s.rejected
    assert attested == [len(bs)]                       # one attestation round vouched for the batch


def test_an_anchor_served_alone_is_not_kept_unattested(blocks) -> None:
    """A stream that starts above 1 checks the block below its start as an anchor, which only
    the attestation of a later block vouches for (they are hash-linked). A replica that serves
    the anchor alone (it says that is its head), forged under a valid certificate, must not
    leave it behind as the stream's previous block: every honest replica's next block would
    then fail the hash link, and the stream would ask for ever."""
    from dataclasses import replace

    from crypto.merkle import root_of
    from ledger.state import OK, encode_result

    d, bs = blocks
    below = bs[3]                                     # the anchor of a stream from height 5
    results = [encode_result(OK, b"forged")] * len(below.results)
    forged = replace(below, results=results, results_root=root_of(results))
    assert forged.check_roots() is None and forged.hash() != below.hash()

    async def attest(height: int, block_hash: bytes, batch_size: int) -> None:
        assert block_hash == bs[height - 1].hash()

    class Network:                                    # replica 0 lies, the others do not
        class Link:
            connected = True
        links = [Link(), Link(), Link(), Link()]

        async def fetch_blocks(self, replica: int, from_height: int, max_blocks: int, timeout: float):
            if replica == 0:
                return BlocksResponse(1, from_height, 4, [forged.encode()] if from_height == 4 else [])
            return BlocksResponse(1, from_height, len(bs), [b.encode() for b in bs[from_height - 1:]])

    s = BlockStream(load(d), Network(), 5, attest=attest)

    async def run() -> Block:
        with trio.fail_after(5):
            return await s.__anext__()

    assert trio.run(run).hash() == bs[4].hash()


def test_answers_that_fail_their_checks_do_not_keep_a_stream_from_timing_out(blocks) -> None:
    """Every reachable replica answers, but with a block that fails its check (here a
    certificate cut short): the stream's timeout counts sound answers only, so it ends with
    Unavailable instead of asking for ever."""
    from ledger.client import Unavailable

    d, bs = blocks
    bad = Block.decode(bs[0].encode())
    bad.cert = bad.cert[:1]

    class Network:
        class Link:
            connected = True
        links = [Link(), Link(), Link(), Link()]

        async def fetch_blocks(self, replica: int, from_height: int, max_blocks: int, timeout: float):
            return BlocksResponse(1, from_height, len(bs), [bad.encode()])

    s = BlockStream(load(d), Network(), 1, timeout=0.5)

    async def run() -> None:
        with trio.fail_after(10), pytest.raises(Unavailable, match="certificate"):
            await s.__anext__()

    trio.run(run)

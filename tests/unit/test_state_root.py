"""The state root in the ledger (issue 16): block format version 2, re-execution checks it
(replay, recovery, the audit), state transfer computes its own, receipts bind it, and
both modes' checkpoints agree on it (the CHECKPOINT's head is the block hash)."""
from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import msgpack
import pytest

from bft.app.clusterinit import init_cluster
from bft.app.demo_offline import OfflineLedger
from bft.catchup import WRONG_HEADER, execute_served
from bft.sim.paxos_scenario import _build as build_paxos_sim
from bft.sim.scenario import build_pbft
from bft.sim.world import NetworkModel
from crypto.merkle import root_of
from ledger import state
from ledger.audit import audit
from ledger.block import BLOCK_TAG, BLOCK_VERSION, Block, BlockFormatError
from ledger.certificate import ATTEST_DOMAIN, attestation_statement
from ledger.chain import Chain, ReplayError
from ledger.cluster import load
from ledger.receipt import Receipt, ReceiptError
from ledger.statetree import EMPTY_STATE_ROOT
from ledger.store import BlockStore, StoreCorrupt
from tests.unit.test_statetree import naive_root


def _ledger(tmp_path: Path, mode: str = "pbft") -> OfflineLedger:
    d = tmp_path / mode
    init_cluster(d, mode, 1, clients=3)
    return OfflineLedger(load(d))


def _commit_some(led: OfflineLedger, count: int, rng: random.Random) -> tuple[list[Block], list[dict]]:
    """``count`` blocks of random puts, deletes and transactions; the model state after each."""
    blocks, states, model = [], [], {}
    for _ in range(count):
        txs = []
        for _ in range(rng.randrange(0, 6)):
            k = f"k{rng.randrange(8)}"
            c = rng.randrange(3)
            if rng.random() < 0.6:
                v = rng.randbytes(3)
                txs.append(led.request(c, state.op_put(k, v)))
                model[k] = v
            else:
                txs.append(led.request(c, state.op_delete(k)))
                model.pop(k, None)
        blocks.append(led.commit(txs))
        states.append(dict(model))
    return blocks, states


# ----------------------------------------------------------------------------- the header
def test_every_header_commits_to_the_state_after_its_block(tmp_path: Path) -> None:
    led = _ledger(tmp_path)
    blocks, states = _commit_some(led, 12, random.Random(1))
    for b, model in zip(blocks, states):
        assert b.header()[:2] == [BLOCK_TAG, 2] and len(b.header()) == 10
        assert b.state_root == b.header()[-1] == naive_root(model)
        assert Block.decode(b.encode()) == b
    assert led.chain.kv.root() == blocks[-1].state_root
    empty = Chain().execute(1, 0, [])
    assert empty.state_root == EMPTY_STATE_ROOT


def test_the_block_hash_covers_the_state_root(tmp_path: Path) -> None:
    b = _ledger(tmp_path).commit([])
    assert dataclasses.replace(b, state_root=bytes(32)).hash() != b.hash()


def _header_variant(b: Block, header: list) -> bytes:
    return msgpack.packb([header, b.view, b.txs, b.results, [list(c) for c in b.cert]], use_bin_type=True)


def test_other_versions_and_malformed_headers_are_errors(tmp_path: Path) -> None:
    b = _ledger(tmp_path).commit([])
    h = b.header()
    cases = {
        "version 1 has no state root": h[:1] + [1] + h[2:9],         # a block written before issue 16
        "unsupported block version 3": h[:1] + [3] + h[2:],
        "unsupported block version 2.0": h[:1] + [2.0] + h[2:],
        "has 10 fields, not 9": h[:9],
        "has 10 fields, not 11": h + [bytes(32)],
        "state root is not 32 bytes": h[:9] + [bytes(31)],
        "state root is not 32": h[:9] + [None],
        "malformed block header": [BLOCK_TAG],
    }
    for match, header in cases.items():
        with pytest.raises(BlockFormatError, match=match):
            Block.decode(_header_variant(b, header))
    assert BLOCK_VERSION == 2


def test_mutated_blocks_decode_or_fail_cleanly(tmp_path: Path) -> None:
    led = _ledger(tmp_path)
    blocks, _ = _commit_some(led, 3, random.Random(2))
    raw = blocks[-1].encode()
    rng = random.Random(99)
    for _ in range(3000):
        data = bytearray(raw)
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            Block.decode(bytes(data))
        except BlockFormatError:
            pass


# ----------------------------------------------------------------------------- re-execution
def test_replay_rejects_a_state_root_that_re_execution_does_not_give(tmp_path: Path) -> None:
    led = _ledger(tmp_path)
    blocks, _ = _commit_some(led, 6, random.Random(3))
    for k in range(len(blocks)):
        c = Chain()
        for b in blocks[:k]:
            c.replay(b)
        for forged in (bytes(32), EMPTY_STATE_ROOT, blocks[k - 1].state_root if k else bytes(32)):
            if forged == blocks[k].state_root:
                continue
            with pytest.raises(ReplayError, match="state root .* in the header"):
                Chain.replay(_copy_chain(blocks[:k]), dataclasses.replace(blocks[k], state_root=forged))
        c.replay(blocks[k])
        assert c.kv.root() == blocks[k].state_root


def _copy_chain(blocks: list[Block]) -> Chain:
    c = Chain()
    for b in blocks:
        c.replay(b)
    return c


def _relinked(blocks: list[Block], at: int, state_root: bytes) -> list[Block]:
    """The chain with block ``at``'s state root replaced and every later block re-linked to it:
    each block still carries a valid commit certificate (it signs the batch root only)."""
    out = blocks[:at - 1]
    prev = out[-1].hash() if out else None
    for b in blocks[at - 1:]:
        b = dataclasses.replace(b, state_root=state_root if b.height == at else b.state_root)
        if prev is not None:
            b = dataclasses.replace(b, prev_hash=prev)
        out.append(b)
        prev = b.hash()
    return out


@pytest.mark.parametrize("mode", ["pbft", "paxos"])
def test_audit_reports_the_first_height_whose_state_root_differs(tmp_path: Path, mode: str) -> None:
    led = _ledger(tmp_path, mode)
    blocks, _ = _commit_some(led, 5, random.Random(4))
    forged = _relinked(blocks, 3, EMPTY_STATE_ROOT if blocks[2].state_root != EMPTY_STATE_ROOT else bytes(32))
    path = led.cluster.data_dir(0)
    with BlockStore.open(path, fsync=False) as store:
        store.append_many(forged)
    r = audit(led.cluster.directory, 0)
    assert not r.ok and r.first_bad_height == 3 and r.height == 2
    assert "re-execution: state root" in r.reason and "after re-execution" in r.reason
    assert r.state_root == blocks[1].state_root.hex()
    with pytest.raises(StoreCorrupt, match="height 3: re-execution: state root"):
        BlockStore.open(path, fsync=False)


def test_audit_reports_the_state_root(tmp_path: Path) -> None:
    led = _ledger(tmp_path)
    blocks, states = _commit_some(led, 4, random.Random(5))
    with BlockStore.open(led.cluster.data_dir(0), fsync=False) as store:
        store.append_many(blocks)
    r = audit(led.cluster.directory, 0)
    assert r.ok and r.state_root == blocks[-1].state_root.hex() == naive_root(states[-1]).hex()
    assert json.loads(json.dumps(r.to_dict()))["state_root"] == r.state_root
    assert any(line.strip() == f"state:      root {r.state_root}" for line in r.summary_lines())


# ----------------------------------------------------------------------------- state transfer
def test_a_served_block_with_a_false_state_root_is_executed_with_ours(tmp_path: Path) -> None:
    led = _ledger(tmp_path)
    blocks, _ = _commit_some(led, 3, random.Random(6))
    mine = _copy_chain(blocks[:2])
    lie = dataclasses.replace(blocks[2], state_root=bytes(32))

    class Keys:
        replicas = led.cluster.replica_keys()
        verifier = led.cluster.verifier()
    block, why = execute_served(mine, "pbft", led.cluster.f, Keys, lie.encode())
    assert why is WRONG_HEADER                         # the peer's lie is counted ...
    assert block.state_root == blocks[2].state_root    # ... and our block carries the true root
    assert block.hash() == blocks[2].hash() and mine.kv.root() == blocks[2].state_root


# ----------------------------------------------------------------------------- receipts
def _receipt(led: OfflineLedger, block: Block, index: int) -> Receipt:
    ids = list(range(led.cluster.quorums.attest))
    h = block.hash()
    att = [(i, led.replicas[i].sign(ATTEST_DOMAIN, attestation_statement(block.height, h, len(block.txs), i)))
           for i in ids]
    return Receipt.from_block(block, index, led.cluster.mode, attestations=att, cluster_id=led.cluster.cluster_id)


@pytest.mark.parametrize("mode", ["pbft", "paxos"])
def test_receipts_carry_and_bind_the_state_root(tmp_path: Path, mode: str) -> None:
    led = _ledger(tmp_path, mode)
    led.commit([led.request(0, state.op_put("a", b"1"))])
    block = led.commit([led.request(1, state.op_put("b", b"2")), led.request(2, state.op_delete("a"))])
    r = _receipt(led, block, 1)
    assert r.verify(led.cluster).block_hash == block.hash()
    doc = r.to_dict()
    assert doc["receipt_version"] == 4 and doc["block"]["state_root"] == block.state_root.hex()
    assert Receipt.from_json(r.to_json()) == r
    forged = json.loads(json.dumps(doc))
    forged["block"]["state_root"] = EMPTY_STATE_ROOT.hex()      # the certificate alone would not notice
    with pytest.raises(ReceiptError, match="valid distinct signatures on the block hash"):
        Receipt.from_dict(forged).verify(led.cluster)
    old = json.loads(json.dumps(doc))
    old["receipt_version"] = 3
    del old["block"]["state_root"]
    with pytest.raises(ReceiptError, match="receipt_version 3 .* no state root"):
        Receipt.from_dict(old)
    missing = json.loads(json.dumps(doc))
    del missing["block"]["state_root"]
    with pytest.raises(ReceiptError, match="state_root"):
        Receipt.from_dict(missing)


# ----------------------------------------------------------------------------- checkpoints, both modes
def _agree(replicas, min_height: int) -> None:
    """Honest replicas' ledgers: one chain of block hashes (so of state roots too), and every
    replica's live state is the one its last block commits to."""
    longest = max((r.blocks for r in replicas), key=len)
    assert len(longest) >= min_height
    for r in replicas:
        assert [b.hash() for b in r.blocks] == [b.hash() for b in longest[:len(r.blocks)]]
        if r.blocks:
            assert r.core.chain.kv.root() == r.blocks[-1].state_root


def test_pbft_checkpoints_and_state_transfer_agree_on_state_roots() -> None:
    sim = build_pbft(7, 4, clients=2, config=dict(checkpoint_interval=4, log_size=8, batch_size=2))
    sim.at(0.05, lambda: sim.crash(3))
    sim.at(1.0, lambda: sim.restart(3))             # far behind the stable checkpoint: a state transfer
    for j in range(80):
        sim.at(0.025 * j, lambda j=j: sim.submit(j % 2, f"k{j % 5}", b"v%d" % j))
    sim.run_until(8.0, stop=lambda: sim.now > 2.1 and sim.all_acked()
                  and len(sim.replicas[3].blocks) == len(sim.replicas[0].blocks))
    assert sim.checker.violation is None and sim.all_acked()
    assert len(sim.replicas[3].blocks) == len(sim.replicas[0].blocks) >= 30
    assert all(r.core.h >= 24 for r in sim.replicas)  # CHECKPOINTs (on block hashes) became stable everywhere
    _agree(sim.replicas, 30)


def test_paxos_catch_up_agrees_on_state_roots() -> None:
    sim, _ = build_paxos_sim(8, 3, 2, False, NetworkModel(), False, checkpoint_interval=4)
    sim.at(0.05, lambda: sim.crash(2))
    sim.at(1.0, lambda: sim.restart(2))
    for j in range(80):
        sim.at(0.025 * j, lambda j=j: sim.submit(j % 2, f"k{j % 5}", b"v%d" % j))
    sim.run_until(8.0, stop=lambda: sim.now > 2.1 and sim.all_acked()
                  and len(sim.replicas[2].blocks) == len(sim.replicas[0].blocks))
    assert sim.checker.violation is None and sim.all_acked()
    assert len(sim.replicas[2].blocks) == len(sim.replicas[0].blocks) >= 20
    _agree(sim.replicas, 20)


def test_a_block_root_is_the_root_of_its_batch_of_writes(tmp_path: Path) -> None:
    """One tree update per key per block: a key written many times in a block is counted once,
    and the root is what a fresh state holding the final values has."""
    led = _ledger(tmp_path)
    txs = [led.request(i % 3, state.op_put("hot", b"%d" % i)) for i in range(20)]
    txs += [led.request(0, state.op_put("gone", b"x")), led.request(1, state.op_delete("gone"))]
    b = led.commit(txs)
    assert b.state_root == naive_root({"hot": b"19"})
    assert root_of(b.txs) == b.batch_root

"""Receipts: built from a block, checked offline with public keys only, JSON round trip, and
every kind of tampering refused."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bft.app.clusterinit import init_cluster
from bft.app.demo_offline import OfflineLedger
from ledger import state
from crypto.merkle import MerkleTree, leaf_hash
from ledger.certificate import ATTEST_DOMAIN, attestation_statement
from ledger.cluster import load
from ledger.receipt import Receipt, ReceiptError


def _attest(led: OfflineLedger, block, ids: list[int]) -> list[tuple[int, bytes]]:
    h = block.hash()
    return [(i, led.replicas[i].sign(ATTEST_DOMAIN, attestation_statement(block.height, h, len(block.txs), i))) for i in ids]


def _receipts(d: Path, mode: str) -> tuple[OfflineLedger, list[Receipt]]:
    init_cluster(d, mode, 1, clients=3)
    led = OfflineLedger(load(d))
    led.commit([led.request(0, state.op_put("a", b"1"))])
    txs = [led.request(i % 3, state.op_put(f"k{i}", f"v{i}".encode())) for i in range(5)]
    txs.append(led.request(1, state.op_cas("a", b"nope", b"2")))
    block = led.commit(txs, view=0 if mode == "pbft" else 3)
    att = _attest(led, block, [0, 1] if mode == "pbft" else [3 % led.cluster.n])
    return led, [Receipt.from_block(block, i, mode, attestations=att, cluster_id=led.cluster.cluster_id) for i in range(len(txs))]


@pytest.mark.parametrize("mode", ["pbft", "paxos"])
def test_receipts_verify_and_round_trip(tmp_path: Path, mode: str) -> None:
    _, receipts = _receipts(tmp_path / "c", mode)
    for r in receipts:
        v = r.verify(tmp_path / "c")
        assert v.block_hash == r.block_hash
        again = Receipt.from_json(r.to_json())
        assert again == r
        again.verify(tmp_path / "c")
    assert [r.ok for r in receipts] == [True] * 5 + [False]
    assert receipts[-1].status == "failed" and receipts[-1].value == b"1"      # the cas saw the current value
    assert receipts[2].describe() == "put 'k2'" and receipts[2].client == 2
    v = receipts[0].verify(tmp_path / "c")
    if mode == "pbft":
        assert v.signers == [0, 1, 2] and v.attesters == [0, 1] and v.trust_model.startswith("byzantine")
    else:
        assert v.signers == [0] and v.trust_model.startswith("crash-fault")


def test_every_tampering_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "c"
    _, receipts = _receipts(d, "pbft")
    good = receipts[3].to_dict()

    def refused(change, match: str) -> None:
        doc = json.loads(json.dumps(good))
        change(doc)
        with pytest.raises(ReceiptError, match=match):
            Receipt.from_dict(doc).verify(d)

    def flip(h: str, i: int = 0) -> str:
        b = bytearray(bytes.fromhex(h))
        b[i] ^= 1
        return b.hex()

    refused(lambda r: r.update(tx=flip(r["tx"], 12)), "signature")
    refused(lambda r: r.update(result=flip(r["result"], 1)), "result")
    refused(lambda r: r.update(index=r["index"] - 1), "inclusion")
    refused(lambda r: r["batch_proof"].__setitem__(0, flip(r["batch_proof"][0])), "inclusion")
    refused(lambda r: r["results_proof"].pop(), "inclusion")
    refused(lambda r: r["block"].update(batch_root=flip(r["block"]["batch_root"])), "inclusion")
    refused(lambda r: r["block"].update(batch_size=r["index"]), "outside a batch")
    refused(lambda r: r["block"].update(sequence=r["block"]["sequence"] + 1), "sequence")
    refused(lambda r: r["block"].update(view=1), "certificate")
    refused(lambda r: r.update(certificate=r["certificate"][:2]), "2 valid")
    refused(lambda r: r.update(certificate=[r["certificate"][0]] * 3), "1 valid")
    refused(lambda r: r["certificate"][1].__setitem__(1, flip(r["certificate"][1][1], 3)), "certificate")
    refused(lambda r: r.update(mode="paxos"), "from a paxos cluster")
    refused(lambda r: r.update(attestations=r["attestations"][:1]), "1 valid distinct")
    refused(lambda r: r.update(attestations=[r["attestations"][0]] * 2), "1 valid distinct")
    refused(lambda r: r["block"].update(tree_size=r["block"]["tree_size"] + 1), "attestations")

    # The forgery the certificate alone cannot catch: another result, a results root and
    # path recomputed to match it. Only the replicas' signatures on the block hash refuse it.
    forged = Receipt.from_dict(json.loads(json.dumps(good)))
    results = [forged.result] * forged.batch_size
    results[forged.index] = state.encode_result(state.OK, b"forged")
    tree = MerkleTree(results)
    doc = json.loads(json.dumps(good))
    doc["result"] = results[forged.index].hex()
    doc["block"]["results_root"] = tree.root().hex()
    doc["results_proof"] = [h.hex() for h in tree.inclusion_proof(forged.index)]
    with pytest.raises(ReceiptError, match="attestations"):
        Receipt.from_dict(doc).verify(d)
    for bad in ("", "[]", '{"receipt_version": 2}', json.dumps(dict(good, tx="zz")),
                json.dumps(dict(good, index=-1)), json.dumps(dict(good, receipt_version=9))):
        with pytest.raises(ReceiptError, match="not a receipt"):
            Receipt.from_json(bad)
    other = tmp_path / "other"                       # the same receipt against another cluster's keys
    init_cluster(other, "pbft", 1, clients=4)
    with pytest.raises(ReceiptError):
        Receipt.from_dict(good).verify(other)


def test_a_receipt_does_not_verify_in_another_cluster_with_the_same_keys(tmp_path: Path) -> None:
    """Two clusters made from the same keys differ in their genesis nonce, so in their cluster
    id, which every signature covers: a receipt of one is refused by the other, with a message
    that says so, and relabelling it with the other's id breaks every signature instead."""
    import shutil

    from ledger import cluster as clustermod

    _, receipts = _receipts(tmp_path / "a", "pbft")
    a = load(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    clustermod.write(tmp_path / "b", a.mode, a.f, [(r.host, r.port) for r in a.replicas], a.replica_keys(),
                     list(a.clients), genesis_nonce=bytes(32))
    b = load(tmp_path / "b")
    assert b.replica_keys() == a.replica_keys() and b.cluster_id != a.cluster_id
    r = receipts[0]
    r.verify(a)
    with pytest.raises(ReceiptError, match=f"from cluster {a.cluster_id[:8].hex()}, not from the cluster"):
        r.verify(b)
    doc = r.to_dict()
    doc["cluster_id"] = b.cluster_id.hex()
    with pytest.raises(ReceiptError, match="signature"):
        Receipt.from_dict(doc).verify(b)


@pytest.mark.parametrize("field,value", [("operation", "put 'mallory'"), ("client", 2), ("status", "failed"),
                                         ("ok", False), ("block_hash", "00" * 32)])
def test_an_edited_summary_is_refused(tmp_path: Path, field: str, value) -> None:
    """Issue 11, item 10: verify-receipt printed the true content and exited 0 for a receipt
    whose summary was edited, so whoever read the file was misled."""
    d = tmp_path / "c"
    _, receipts = _receipts(d, "pbft")
    doc = receipts[3].to_dict()
    doc["summary"][field] = value
    with pytest.raises(ReceiptError, match=f"summary disagrees with what it proves \\({field}\\)"):
        Receipt.from_dict(doc).verify(d)


def test_only_verified_signers_are_listed(tmp_path: Path) -> None:
    """Issue 11, item 11: ids carrying junk signatures were listed among the signers."""
    d = tmp_path / "c"
    _, receipts = _receipts(d, "pbft")
    r = receipts[3]
    r.cert = r.cert + [(3, b"\x00" * 64)]
    r.attestations = r.attestations + [(2, b"\x01" * 64)]
    v = r.verify(d)
    assert 3 not in v.signers and len(v.signers) == 3
    assert 2 not in v.attesters and v.attesters == [0, 1]


def test_index_and_batch_size_are_bound(tmp_path: Path) -> None:
    """Issue 11, item 12: other (index, batch size) pairs whose RFC 9162 paths happen to agree
    used to verify. The attestations now sign the block's number of transactions, and for one
    tree size an inclusion path fits one index only (checked below for every size to 64)."""
    from crypto.merkle import verify_inclusion

    d = tmp_path / "c"
    _, receipts = _receipts(d, "pbft")
    r = receipts[3]
    leaf, res = leaf_hash(r.tx), leaf_hash(r.result)
    others = [(j, n) for n in range(1, 129) for j in range(n) if (j, n) != (r.index, r.batch_size)
              and verify_inclusion(leaf, j, n, r.batch_proof, r.batch_root)
              and verify_inclusion(res, j, n, r.results_proof, r.results_root)]
    assert others, "the paths alone do not bind (index, batch size): the case this test guards"
    for j, n in others:
        doc = r.to_dict()
        doc["index"], doc["block"]["batch_size"] = j, n
        doc.pop("summary")
        with pytest.raises(ReceiptError, match="attestations"):
            Receipt.from_dict(doc).verify(d)


def test_an_inclusion_path_fits_one_index_per_tree_size() -> None:
    from crypto.merkle import verify_inclusion

    for size in range(1, 65):
        tree = MerkleTree([b"leaf-%d" % i for i in range(size)])
        root = tree.root()
        for i in range(size):
            proof = tree.inclusion_proof(i)
            leaf = leaf_hash(b"leaf-%d" % i)
            assert [j for j in range(size) if verify_inclusion(leaf, j, size, proof, root)] == [i]


def test_a_registered_clients_receipt_carries_its_registration_and_forgeries_are_refused(tmp_path: Path) -> None:
    """Issue 15: a client added on the running ledger is not in cluster.toml; its receipts
    prove its key with the receipt of the administrator's registration."""
    from dataclasses import replace

    from crypto import keys, tls
    from ledger import wire

    d = tmp_path / "c"
    init_cluster(d, "pbft", 1, clients=3)
    led = OfflineLedger(load(d))
    new, other = keys.generate().bound(led.cluster.cluster_id), keys.generate().bound(led.cluster.cluster_id)
    cert = tls.make_certificate(new.seed, "new client")

    def registration(client: int, pem: bytes) -> Receipt:
        b = led.commit([led.request(client, state.op_addclient(pem))])
        return Receipt.from_block(b, 0, "pbft", attestations=_attest(led, b, [0, 1]), cluster_id=led.cluster.cluster_id)

    reg = registration(0, cert)                                  # client 0 is the administrator
    assert reg.ok and reg.value == b"0" and reg.operation["kind"] == "addclient"
    assert led.chain.registry.keys == [new.public_key]
    tx = wire.Request(3, 1, state.op_put("mine", b"1")).signed(new).encode()
    b = led.commit([tx])
    mine = Receipt.from_block(b, 0, "pbft", attestations=_attest(led, b, [0, 1]), cluster_id=led.cluster.cluster_id)
    with pytest.raises(ReceiptError, match="carries no registration"):
        mine.verify(d)
    mine.registration = reg
    assert Receipt.from_json(mine.to_json()).verify(d).block_hash == mine.block_hash
    # a registration by someone else than the administrator (the chain executes what was certified)
    by_1 = registration(1, tls.make_certificate(other.seed, "other"))
    with pytest.raises(ReceiptError, match="not the administrator"):
        replace(mine, registration=by_1).verify(d)
    # the registration of another client index, or after the transaction
    assert by_1.value == b"1"
    with pytest.raises(ReceiptError, match="of client 4, not 3"):         # were client 1 the administrator
        replace(mine, registration=by_1).verify(replace(load(d), admin=1))
    late = registration(0, cert)                                # a second registration of a key is refused
    assert not late.ok and b"already registered" in late.value
    # a registration that does not verify (an edited certificate inside it)
    bad = replace(reg, tx=reg.tx[:-1] + bytes([reg.tx[-1] ^ 1]))
    with pytest.raises(ReceiptError, match="registration of client 3"):
        replace(mine, registration=bad).verify(d)

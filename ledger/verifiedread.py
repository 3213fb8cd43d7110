"""The client's side of a verified read (``Client.get_verified``, issue 16).

Kept out of ``ledger.client`` (which is long enough) and out of ``ledger.readproof``
(which is pure and offline: it never talks to a replica).

One replica's answer is enough when it verifies, because nothing in it is taken on that
replica's word: the certificate is checked against the batch root, the state proof
against the header's state root, and the header's hash against f+1 attestations (pbft;
one in paxos) asked of every replica. So replicas are asked one at a time, those the
client is connected to first, starting at a different one each time (to spread the
load); an answer that does not verify is counted (``Client.read_proofs_rejected`` and
the session's ``WireRule.READ_PROOF_REJECTED``) and the next replica is asked. An honest
replica below the client's floor, or one that refuses (a height it has not reached, a
past state beyond its replay limit), is not counted as lying: its reason is kept for
the error raised when no replica gives a proof that verifies.
"""
from __future__ import annotations

import msgpack
import trio

from ledger.block import BlockFormatError, parse_header
from ledger.client import Client, ReadProofUnavailable
from ledger.readproof import ReadProof
from ledger.receipt import ReceiptError
from ledger.rules import WireRule
from ledger.statetree import StateProof, StateProofError
from ledger.wire import MAX_U64, REBUILDING, ProofResponse

PROOF_TIMEOUT = 2.0             # seconds to wait for one replica's answer
ROUNDS = 3                      # passes over the replicas (an honest one may be a block behind)
ROUND_PAUSE = 0.2
REBUILD_ASKS = 64               # times one replica is asked again while it rebuilds a past state ...
REBUILD_PAUSE = 0.5             # ... this far apart (within its query budget: bft.runtime.proofs)


def check_height(at_height: object) -> int:
    """The height to ask for (0: the current one); TypeError/ValueError for anything else."""
    if at_height is None:
        return 0
    if type(at_height) is not int:
        raise TypeError(f"at_height is an int or None, not {type(at_height).__name__}")
    if not 1 <= at_height <= MAX_U64:
        raise ValueError(f"at_height must be a block height (1 or more), not {at_height}")
    return at_height


def proof_of(client: Client, key: str, m: ProofResponse) -> ReadProof:
    """The ReadProof a replica's answer describes (not yet verified); ValueError if malformed."""
    try:
        header = msgpack.unpackb(m.header, raw=False, use_list=True, max_bin_len=64, max_str_len=0,
                                 max_array_len=16, max_map_len=0, max_ext_len=0)
        height, seq, prev, broot, rroot, tsize, troot, sroot = parse_header(header)
        proof = StateProof.decode(m.proof)
    except (BlockFormatError, StateProofError) as e:
        raise ValueError(str(e)) from None
    except Exception as e:
        raise ValueError(f"the header is not msgpack ({type(e).__name__})") from None
    if height != m.height:
        raise ValueError(f"the answer says height {m.height} but its header is block {height}'s")
    if proof.key != key:
        raise ValueError(f"the state proof is about key {proof.key!r}, not {key!r}")
    c = client.cluster
    return ReadProof(mode=c.mode, cluster_id=c.cluster_id, height=height, sequence=seq, view=m.view, prev_hash=prev,
                     batch_root=broot, results_root=rroot, tree_size=tsize, tree_root=troot, state_root=sroot,
                     batch_size=m.batch_size, state_proof=proof, cert=[(r, s) for r, s in m.cert])


async def verified_read(client: Client, key: str, at_height: int | None) -> ReadProof:
    """See ``Client.get_verified``; ``ReadProofUnavailable`` after the client's timeout."""
    height = check_height(at_height)
    with trio.move_on_after(client.timeout if client.timeout is not None else float("inf")):
        return await _read(client, key, height)
    raise ReadProofUnavailable(f"no read proof of {key!r} that verifies within {client.timeout:g} s")


async def _read(client: Client, key: str, height: int) -> ReadProof:
    session = client._session
    c = client.cluster
    reasons: dict[int, str] = {}
    for round_ in range(ROUNDS):
        if round_:
            await trio.sleep(ROUND_PAUSE)
        start = client._proof_turn = (client._proof_turn + 1) % c.n
        order = sorted(((r - start) % c.n, r) for r in range(c.n))
        order.sort(key=lambda t: not session.links[t[1]].connected)          # connected ones first, stable
        for _, r in order:
            if session.refused_by_all():                 # nothing runs there: say so, at once
                raise ReadProofUnavailable(session.describe_unavailable(None))
            m = await session.fetch_proof(r, key, height, PROOF_TIMEOUT)
            for _ in range(REBUILD_ASKS):             # it re-executes toward a past height, a bounded part a query
                if m is None or m.height or not m.refusal.startswith(REBUILDING):
                    break
                await trio.sleep(REBUILD_PAUSE)
                m = await session.fetch_proof(r, key, height, PROOF_TIMEOUT)
            if m is None:
                reasons[r] = "no answer"
                continue
            if m.height == 0:
                reasons[r] = "refused: " + m.refusal.decode(errors="replace")
                continue
            floor = session.core.floor
            if height == 0 and m.height < floor:
                reasons[r] = f"at height {m.height}, below this client's floor {floor} (behind)"
                continue
            try:
                proof = proof_of(client, key, m)
                if height and proof.height != height:
                    raise ValueError(f"a proof at height {proof.height} where {height} was asked")
                why = proof.error(c, client._verifier, check_attestations=False)
                if why is not None:
                    raise ValueError(why)
                others = [x for _, x in order if x != r] + [r]
                proof.attestations = await client._attestations(proof.height, proof.block_hash, proof.batch_size,
                                                                others)
            except (ValueError, ReceiptError) as e:
                client.read_proofs_rejected += 1
                session.problems.note(WireRule.READ_PROOF_REJECTED, f"replica {r}: {e}")
                reasons[r] = f"rejected: {e}"
                continue
            if height == 0 and proof.height > session.core.floor:
                session.core.floor = proof.height          # f+1 attested it: an honest replica executed it
            return proof
    detail = "; ".join(f"replica {r}: {why}" for r, why in sorted(reasons.items()))
    at = "its current height" if height == 0 else f"height {height}"
    raise ReadProofUnavailable(f"no replica gave a read proof of {key!r} at {at} that verifies ({detail})")


__all__ = ["verified_read", "check_height", "proof_of"]

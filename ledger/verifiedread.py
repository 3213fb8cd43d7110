"""The client's side of a verified read (``Client.get_verified``, issue 16).

Kept out of ``ledger.client`` (which is long enough) and out of ``ledger.readproof``
(which is pure and offline: it never talks to a replica).

One replica's answer is enough when it verifies, because nothing in it is taken on that
replica's word: the certificate is checked against the batch root, the state proof
against the header's state root, and the header's hash against f+1 attestations (pbft;
one in paxos) asked of every replica. So replicas are asked one at a time, those the
client is connected to first, starting at a different one each time (to spread the
load); an answer that does not verify is counted (``Client.read_proofs_rejected`` and
the session's ``WireRule.READ_PROOF_REJECTED``), that replica is not asked again, and
the next one is. An honest replica below the client's floor, or one that refuses (a
height it has not reached, or "rebuilding" a past state a bounded part per query:
``bft.runtime.proofs``), is not counted as lying and is asked again in the next round;
its reason is kept for the error raised when no replica gives a proof that verifies.
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
ROUNDS = 3                      # times a replica that did not answer, refused or was behind is asked
ROUND_PAUSE = 0.2
REBUILD_ASKS = 64               # times a replica rebuilding a past state is asked (all in step) ...
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
    """Ask the replicas in turn, in rounds. A replica whose answer did not verify is not asked
    again (it lied, or it cannot help); one that did not answer, refused or was behind is
    asked again next round, up to ``ROUNDS``; one rebuilding a past state up to
    ``REBUILD_ASKS`` rounds, all of them in step, so that a liar that keeps saying
    "rebuilding" delays no round by more than its own quick answer."""
    session = client._session
    c = client.cluster
    reasons: dict[int, str] = {}
    start = client._proof_turn = (client._proof_turn + 1) % c.n
    pending = sorted(range(c.n), key=lambda r: (not session.links[r].connected, (r - start) % c.n))
    rebuilds = dict.fromkeys(range(c.n), 0)
    round_ = 0
    while pending:
        again: list[int] = []
        for r in pending:
            if session.refused_by_all():                 # nothing runs there: say so, at once
                raise ReadProofUnavailable(session.describe_unavailable(None))
            m = await session.fetch_proof(r, key, height, PROOF_TIMEOUT)
            retry = round_ + 1 < ROUNDS
            if m is None:
                reasons[r] = "no answer"
            elif m.height == 0:
                reasons[r] = "refused: " + m.refusal.decode(errors="replace")
                if m.refusal.startswith(REBUILDING):
                    rebuilds[r] += 1
                    retry = rebuilds[r] < REBUILD_ASKS
            elif height == 0 and m.height < session.core.floor:
                reasons[r] = f"at height {m.height}, below this client's floor {session.core.floor} (behind)"
            else:
                try:
                    return await _checked(client, key, height, m, [x for x in range(c.n) if x != r] + [r])
                except (ValueError, ReceiptError) as e:
                    client.read_proofs_rejected += 1
                    session.problems.note(WireRule.READ_PROOF_REJECTED, f"replica {r}: {e}")
                    reasons[r] = f"rejected: {e}"
                    retry = False
            if retry:
                again.append(r)
        pending = again
        round_ += 1
        if pending:
            await trio.sleep(REBUILD_PAUSE if any(rebuilds[r] for r in pending) else ROUND_PAUSE)
    detail = "; ".join(f"replica {r}: {why}" for r, why in sorted(reasons.items()))
    at = "its current height" if height == 0 else f"height {height}"
    raise ReadProofUnavailable(f"no replica gave a read proof of {key!r} at {at} that verifies ({detail})")


async def _checked(client: Client, key: str, height: int, m: ProofResponse, candidates: list[int]) -> ReadProof:
    """The ReadProof of a replica's answer, with f+1 attestations (one in paxos); ValueError or
    ReceiptError when it does not verify."""
    proof = proof_of(client, key, m)
    if height and proof.height != height:
        raise ValueError(f"a proof at height {proof.height} where {height} was asked")
    why = proof.error(client.cluster, client._verifier, check_attestations=False)
    if why is not None:
        raise ValueError(why)
    proof.attestations = await client._attestations(proof.height, proof.block_hash, proof.batch_size, candidates)
    session = client._session
    if height == 0 and proof.height > session.core.floor:
        session.core.floor = proof.height              # f+1 attested it: an honest replica executed it
    return proof


__all__ = ["verified_read", "check_height", "proof_of"]

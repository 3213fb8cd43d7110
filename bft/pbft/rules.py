"""The rules by which a pbft replica rejects a message, each citing the paper.

Section numbers are those of Castro & Liskov, "Practical Byzantine Fault Tolerance",
OSDI 1999 (the signature variant; the TOCS 2002 paper tells the same rules at length).
Rules marked "bftledger" bound what the paper leaves unbounded (rates, retention) or
guard against an attack the paper's model allows but does not discuss.
"""
from __future__ import annotations

from enum import unique

from ledger.rules import CL99, OURS, Rule

NORMAL = f"{CL99}, §4.2"
GC = f"{CL99}, §4.3"
VC = f"{CL99}, §4.4"
LIVE = f"{CL99}, §4.5.2"


@unique
class PbftRule(Rule):
    # normal case (§4.2)
    OTHER_VIEW = ("message from another view", f"{NORMAL}: a backup accepts messages of its current view")
    ENTERING_VIEW = ("message of the view being entered (held until its NEW-VIEW)", f"{VC}; {OURS}: held, bounded")
    ABOVE_WATERMARK = ("sequence number above the high watermark (held until the window moves)",
                       f"{GC}; {OURS}: held, bounded")
    OUTSIDE_WATERMARKS = ("sequence number outside the watermarks h < n <= H", f"{NORMAL}")
    NOT_FROM_PRIMARY = ("PRE-PREPARE not from the view's primary", f"{NORMAL}")
    CONFLICTING_PRE_PREPARE = ("conflicting PRE-PREPARE for an accepted (view, sequence)",
                               f"{NORMAL}: a backup accepts one digest per (v, n)")
    CONTRADICTS_OWN_VOTE = ("PRE-PREPARE contradicting this replica's own earlier vote",
                            f"{NORMAL}; {OURS}: votes are persisted before they are sent")
    BAD_SIGNATURE = ("message with a bad signature", f"{NORMAL} (signed messages)")
    PREPARE_FROM_PRIMARY = ("PREPARE from the primary", f"{NORMAL}: prepared counts 2f PREPAREs of backups")
    DUPLICATE_VOTE = ("second PREPARE or COMMIT from one replica for one (view, sequence)",
                      f"{NORMAL}: quorums count distinct replicas")
    # batches (§4.2 with request digests in the PRE-PREPARE)
    BATCH_DIGEST = ("batch does not match its digest", f"{NORMAL}: d is the digest of the request batch")
    BATCH_MALFORMED_REQUEST = ("batch holds a malformed request, a non-request or a non-canonical encoding",
                               f"{NORMAL}; {OURS}: one encoding per request")
    BATCH_BAD_CLIENT_SIGNATURE = ("batch holds a request with a bad client signature", f"{CL99}, §4.1")
    BATCH_OVER_CAP = ("batch over the byte cap", f"{OURS}: bounded batches")
    BATCH_BAD_REGISTRATION = ("batch holds a client registration its sender may not make, or of a key in use",
                              f"{CL99}, §4.1 (backups check what the primary proposes); {OURS}: ledger.clients")
    UNHELD_BATCH = ("batch request for a batch this replica does not hold", OURS)
    UNSOLICITED_BATCH = ("batch response nobody asked for", OURS)
    BATCH_FETCH_RATE = ("batch requests over the rate limit", f"{OURS}: bounded work per peer")
    # checkpoints (§4.3)
    STALE_CHECKPOINT = ("stale or misaligned CHECKPOINT", f"{GC}: checkpoints every K sequence numbers")
    CHECKPOINT_PROOF_SIZE = ("checkpoint proof without 2f+1 entries", f"{GC}: a stable checkpoint has 2f+1")
    CHECKPOINT_PROOF_MIXED = ("checkpoint proof mixes sequence numbers or states", f"{GC}")
    CHECKPOINT_PROOF_REPEATS = ("checkpoint proof repeats a replica or has too few distinct signers",
                                f"{GC}: quorums count distinct replicas")
    CHECKPOINT_PROOF_SIGNATURE = ("checkpoint proof holds a bad signature", f"{GC}")
    # view change (§4.4)
    VIEW_CHANGE_REGRESSES = ("VIEW-CHANGE below the sender's latest", f"{VC}; {OURS}: one VIEW-CHANGE per sender kept")
    VIEW_CHANGE_SIGNATURE = ("VIEW-CHANGE with a bad signature", f"{VC}")
    PREPARED_CERT_VIEW = ("prepared certificate from a view not below the new one", f"{VC}")
    PREPARED_CERT_WATERMARKS = ("prepared certificate outside the watermarks", f"{VC}")
    PREPARED_CERT_CARRIES_BATCH = ("prepared certificate carries a batch (digest only)", f"{VC}; {OURS}: bounded size")
    PREPARED_CERT_NOT_PRIMARY = ("prepared certificate's PRE-PREPARE is not signed by its view's primary", f"{VC}")
    PREPARED_CERT_MISMATCH = ("prepared certificate holds a PREPARE for something else or of the primary", f"{VC}")
    PREPARED_CERT_SIZE = ("prepared certificate without exactly 2f PREPAREs of distinct backups",
                          f"{VC}: P holds prepared certificates, each 2f PREPAREs")
    PREPARED_CERT_REPEATS = ("prepared certificate repeats a replica", f"{NORMAL}: quorums count distinct replicas")
    PREPARED_CERT_SIGNATURE = ("prepared certificate holds a bad PREPARE signature", f"{VC}")
    PREPARED_CERT_TWICE = ("two prepared certificates for one sequence number", f"{VC}")
    NEW_VIEW_NOT_PRIMARY = ("NEW-VIEW not signed by the new view's primary", f"{VC}")
    NEW_VIEW_FOREIGN_VIEW_CHANGE = ("NEW-VIEW holds a VIEW-CHANGE for another view", f"{VC}")
    NEW_VIEW_REPEATS = ("NEW-VIEW repeats a replica's VIEW-CHANGE", f"{NORMAL}: quorums count distinct replicas")
    NEW_VIEW_BAD_VIEW_CHANGE = ("NEW-VIEW holds an invalid VIEW-CHANGE", f"{VC}: backups check V themselves")
    NEW_VIEW_SIZE = ("NEW-VIEW without exactly 2f+1 VIEW-CHANGEs of distinct replicas", f"{VC}")
    NEW_VIEW_WRONG_O = ("NEW-VIEW's O differs from the one V implies", f"{VC}: backups recompute O from V")
    NEW_VIEW_SIGNATURE = ("NEW-VIEW's O holds a bad PRE-PREPARE signature", f"{VC}")
    SUSPECT_OTHER_VIEW = ("SUSPECT of another view", f"{LIVE}; {OURS}: signed suspicion")
    SUSPECT_SIGNATURE = ("SUSPECT with a bad signature", f"{LIVE}; {OURS}")
    # state transfer
    STATE_REQUEST_RATE = ("state requests over the rate limit", f"{OURS}: bounded work per peer")
    UNSOLICITED_STATE = ("unsolicited state-transfer response", OURS)
    STATE_NO_NEW_BLOCK = ("state-transfer response without a new block", f"{OURS}: a useless answer")
    STATE_WRONG_HEADER = ("state-transfer peer sent a wrong header for a certified batch",
                          f"{OURS}: results are re-executed, never trusted")
    STATE_NOBODY_SERVED = ("state transfer abandoned: no peer served a block", OURS)

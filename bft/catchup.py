"""Executing a block that a peer served during state transfer: shared by both cores.

Nothing the peer says is trusted beyond what the certificate covers: the batch is
checked against its certificate and executed locally, so our block (results, tree head)
is our own; a peer that sent a different header for a certified batch is only noticed.
"""
from __future__ import annotations

from ledger.block import Block, BlockFormatError
from ledger.certificate import certified_block_error
from ledger.chain import Chain
from ledger.rules import LedgerRule, Rejection

SKIP = Rejection(LedgerRule.BLOCK_LINK, "not the next height")   # ignore it and read on
WRONG_HEADER = Rejection(LedgerRule.BLOCK_LINK, "the peer's header differs from ours for a certified batch")


def execute_served(chain: Chain, mode: str, f: int, keys, raw: bytes,
                   check=certified_block_error) -> tuple[Block | None, Rejection | None]:
    """(our block, None) when executed; (None, SKIP) when not the next height; (None, why) when bad
    (``check``: certified_block_error, unless a lab build of the core swaps it).

    A block is returned with why="wrong header" when the peer's header for the certified
    batch differs from ours (the block still stands; the caller counts the lie).
    """
    try:
        b = Block.decode(raw)
    except BlockFormatError:
        return None, Rejection(LedgerRule.BLOCK_MALFORMED)
    if b.height != chain.height + 1:
        return None, SKIP
    why = check(mode, f, keys.replicas, b, keys.verifier)
    if why:
        return None, why
    block = chain.execute(b.sequence, b.view, b.txs, b.cert)
    return block, (None if block.hash() == b.hash() else WRONG_HEADER)

"""A ledger transaction is a client's signed REQUEST exactly as it travelled on the wire.

``bft.wire.Request`` produces these bytes; this module reads them without importing
``bft`` (the ledger sits below the protocols). A test keeps both in agreement.
"""
from __future__ import annotations

from dataclasses import dataclass

import msgpack

REQUEST_TAG = 1
VERSION = 1
REQUEST_DOMAIN = b"bftledger/v1/request"
# the same limits bft.wire applies to a REQUEST (pinned together by tests/unit/test_chain.py)
MAX_CLIENT = (1 << 32) - 1
MAX_TIMESTAMP = (1 << 64) - 1
MAX_OP = 64 * 1024
SIGNATURE_SIZE = 64


@dataclass(frozen=True, slots=True)
class Tx:
    client: int
    timestamp: int
    op: bytes
    sig: bytes

    def signable(self) -> bytes:
        return msgpack.packb([REQUEST_TAG, VERSION, self.client, self.timestamp, self.op], use_bin_type=True)


def parse(tx: bytes) -> Tx | None:
    """The transaction's fields, or None for bytes that are not a well-formed request."""
    try:
        v = msgpack.unpackb(tx, raw=False, use_list=True, strict_map_key=True)
    except Exception:
        return None
    if (type(v) is not list or len(v) != 6 or type(v[0]) is not int or type(v[1]) is not int
            or v[0] != REQUEST_TAG or v[1] != VERSION
            or type(v[2]) is not int or type(v[3]) is not int
            or not 0 <= v[2] <= MAX_CLIENT or not 0 <= v[3] <= MAX_TIMESTAMP
            or type(v[4]) is not bytes or len(v[4]) > MAX_OP
            or type(v[5]) is not bytes or len(v[5]) != SIGNATURE_SIZE):
        return None
    return Tx(v[2], v[3], v[4], v[5])

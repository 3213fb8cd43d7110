"""What a protocol core asks its driver to do, in order.

A core never performs I/O; ``ready()`` returns a list of these actions and the driver
(the trio runtime or the simulator) carries them out in list order. Durable actions
(``Persist``, ``AppendBlock``) must be on stable storage before any later ``Send``,
``Broadcast`` or ``ToClient`` leaves, which is what makes a restarted replica unable to
vote twice differently and what makes an acknowledged write survive a crash.
"""
from __future__ import annotations

from dataclasses import dataclass

from bft.wire import Message
from ledger.block import Block


@dataclass(slots=True)
class Send:
    to: int
    msg: Message


@dataclass(slots=True)
class Broadcast:
    """To every other replica."""
    msg: Message


@dataclass(slots=True)
class ToClient:
    client: int
    msg: Message


@dataclass(slots=True)
class Persist:
    """A vote-log record (opaque bytes) that must be durable before later sends."""
    record: bytes


@dataclass(slots=True)
class CompactVotes:
    """Replace the vote log with exactly these records (after a stable checkpoint)."""
    records: list[bytes]


@dataclass(slots=True)
class AppendBlock:
    block: Block


@dataclass(slots=True)
class ServeBlocks:
    """Read blocks [from_height, to_height] from the store and send them to replica ``to``."""
    to: int
    from_height: int
    to_height: int


Action = Send | Broadcast | ToClient | Persist | CompactVotes | AppendBlock | ServeBlocks


def is_durable(a: object) -> bool:
    return isinstance(a, (Persist, AppendBlock, CompactVotes))

"""What a protocol core asks its driver to do, in order.

A core never performs I/O; ``ready()`` returns a list of these actions and the driver
(the trio runtime or the simulator) carries them out as ``plan`` says, the one
definition both drivers use:

1. the durable actions (``Persist``, ``AppendBlock``, ``CompactVotes``) in list order,
   adjacent ones of one kind merged into one write (one fsync);
2. then every other action, in list order.

Durable before sending is what makes a restarted replica unable to vote twice
differently and what makes an acknowledged write survive a crash. Durable in list order
is what keeps a crash between two writes harmless: a core emits the blocks up to a
stable checkpoint before the compaction that forgets the votes below it, so the vote log
is never compacted past a ledger that is not yet on disk (issue 11: the runtime used to
compact first, and a crash in that window restarted a replica whose stable checkpoint
was above its ledger, with no state transfer to bring it back).
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


# A durable step: ("votes", [record, ...]), ("blocks", [Block, ...]) or ("compact", [record, ...]).
Step = tuple[str, list]


def plan(actions: list[Action]) -> tuple[list[Step], list[Action]]:
    """Split ``ready()``'s output into the durable steps, in order, and what follows them."""
    steps: list[Step] = []
    rest: list[Action] = []
    for a in actions:
        t = type(a)
        if t is Persist:
            if steps and steps[-1][0] == "votes":
                steps[-1][1].append(a.record)
            else:
                steps.append(("votes", [a.record]))
        elif t is AppendBlock:
            if steps and steps[-1][0] == "blocks":
                steps[-1][1].append(a.block)
            else:
                steps.append(("blocks", [a.block]))
        elif t is CompactVotes:
            steps.append(("compact", list(a.records)))
        else:
            rest.append(a)
    return steps, rest

"""State transfer, shared by both cores: a replica behind fetches certified blocks from its peers.

Sans-I/O like the cores it serves: it appends ``Send``/``ServeBlocks``/``AppendBlock``
actions to its host core's output and counts drops through the host's ``_drop``. Every
fetched block is checked against its commit certificate and executed locally
(``bft.catchup.execute_served``), so nothing a peer says is trusted beyond the certificate.

One faulty peer must not pin a transfer (issue 11: an empty answer made a pbft replica
ask the same peer again and reset the deadline; 20 s later it was still at height 0; the
Paxos copy kept asking a peer for as long as it drip-fed one block per answer). So every
request goes to the next peer in turn, whatever the last answer was: a peer that answers
nothing, answers empty or drip-feeds one block at a time gets one request in k. The order
starts with a peer the host names (Paxos: the leader, who holds the chosen prefix) or else
at a place that depends on this replica and the target, so that the replicas behind do
not all ask the same peer first. After ``FRUITLESS_ROUNDS`` rounds over all peers without
a single new block the transfer is abandoned and the host decides when to try again.

The two cores differ only where their protocols do, and say so through ``TransferRules``
(the rule each drop is counted under) and ``TransferHooks`` (what executing a block and
finishing mean to them).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple, Protocol

from bft.catchup import SKIP, execute_served
from bft.outputs import AppendBlock, Send, ServeBlocks
from bft.rules import Rule
from bft.wire import StateRequest, StateResponse
from ledger.block import Block

FRUITLESS_ROUNDS = 3


@dataclass(slots=True)
class Transfer:
    """One transfer in progress: up to ``target``, asking ``peers`` in turn."""
    target: int
    peers: list[int]
    turn: int
    deadline: float
    fruitless: int = 0          # requests in a row that brought no new block

    @property
    def peer(self) -> int:
        """The peer asked last, the only one whose answer is taken."""
        return self.peers[self.turn % len(self.peers)]


class TransferRules(NamedTuple):
    """The rule each drop counts under; None: not counted (the protocol does not charge it)."""
    unsolicited: Rule
    wrong_header: Rule
    no_new_block: Rule | None
    nobody_served: Rule | None


class TransferHooks(NamedTuple):
    executed: Callable[[Block], None]     # a served block was executed (replies, checkpoints)
    finished: Callable[[], None]          # the target is reached
    abandoned: Callable[[], None]         # nobody served a block for FRUITLESS_ROUNDS rounds
    answered: Callable[[], None] = lambda: None   # after each answer's blocks (Paxos learns on)


class Host(Protocol):
    id: int
    f: int
    mode: str
    now: float
    chain: object
    cfg: object
    keys: object
    _out: list
    check_served_block: Callable

    def _drop(self, rule, replica: int | None = None, detail: str = "") -> None: ...


class StateTransfer:
    """The state-transfer machine of one replica: idle, or one ``Transfer`` in progress."""

    __slots__ = ("_host", "_rules", "_hooks", "current", "answer_empty")

    def __init__(self, host: Host, rules: TransferRules, hooks: TransferHooks, *, answer_empty: bool) -> None:
        self._host = host
        self._rules = rules
        self._hooks = hooks
        self.current: Transfer | None = None
        self.answer_empty = answer_empty        # answer an unservable request with an empty response

    def start(self, target: int, peers: list[int], first: int | None = None) -> None:
        """Fetch every block up to ``target``, asking ``peers`` in turn (``first`` first)."""
        if not peers:
            return
        if first is not None and first in peers:
            k = peers.index(first)
        else:
            k = (self._host.id + target) % len(peers)
        self.current = Transfer(target, peers[k:] + peers[:k], 0, 0.0)
        self._request_blocks()

    def tick(self, now: float) -> None:
        t = self.current
        if t is not None and now >= t.deadline:
            self._next_peer(False)

    def _next_peer(self, progressed: bool) -> None:
        """Ask the next peer in turn; give up after FRUITLESS_ROUNDS rounds of no progress."""
        t = self.current
        t.turn += 1
        t.fruitless = 0 if progressed else t.fruitless + 1
        if t.fruitless >= FRUITLESS_ROUNDS * len(t.peers):
            if self._rules.nobody_served is not None:
                self._host._drop(self._rules.nobody_served)
            self.current = None
            self._hooks.abandoned()
            return
        self._request_blocks()

    def _request_blocks(self) -> None:
        host, t = self._host, self.current
        t.deadline = host.now + host.cfg.transfer_timeout
        frm = host.chain.height + 1
        to = min(max(t.target, frm), frm + host.cfg.transfer_chunk - 1)
        host._out.append(Send(t.peer, StateRequest(frm, to, host.id)))

    def serve(self, sender: int, m: StateRequest, allowed: Callable[[int], bool] | None = None,
              refused: Rule | None = None) -> None:
        """A peer asks for blocks: the store sends what this replica holds (``ServeBlocks``)."""
        host = self._host
        to = min(m.to_height, host.chain.height, m.from_height + host.cfg.transfer_chunk - 1)
        if m.from_height < 1 or m.from_height > to:
            if self.answer_empty:
                host._out.append(Send(sender, StateResponse(host.id, [], [])))
            return
        if allowed is not None and not allowed(sender):
            host._drop(refused, sender)
            return
        host._out.append(ServeBlocks(sender, m.from_height, to))

    def on_response(self, sender: int, m: StateResponse) -> None:
        host, rules = self._host, self._rules
        t = self.current
        if t is None or sender != t.peer:
            host._drop(rules.unsolicited, sender)
            return
        before = host.chain.height
        for raw in m.blocks:
            block, why = execute_served(host.chain, host.mode, host.f, host.keys, raw, host.check_served_block)
            if why == SKIP:
                continue
            if block is None:
                host._drop(why, sender)          # a bad block: this peer's answer ends here
                self._hooks.answered()
                if self.current is t:
                    self._next_peer(False)
                return
            if why:
                host._drop(rules.wrong_header, sender)
            host._out.append(AppendBlock(block))
            self._hooks.executed(block)
        self._hooks.answered()
        if self.current is not t:
            return
        if host.chain.height >= t.target:
            self.current = None
            self._hooks.finished()
        else:
            progressed = host.chain.height > before
            if not progressed and rules.no_new_block is not None:
                host._drop(rules.no_new_block, sender)
            self._next_peer(progressed)

"""The part of ``step`` both protocol cores share: authenticate, count drops, admit requests.

A core subclasses ``CoreSkeleton`` and provides ``_handlers`` (message type -> handler,
named after the message, as in ``do_PREPARE``) and ``_on_request``. The skeleton checks,
for every message, what no protocol handler should have to: that a replica's message
comes from a member other than this replica, that its type is one the protocol takes,
and that the sender field it carries (covered by its signature) is the authenticated
sender. What it rejects is counted by rule (``bft.rules.StepRule``) and by sender.
"""
from __future__ import annotations

import logging
from operator import attrgetter
from typing import Callable, ClassVar, Iterable, TypeVar

from bft.outputs import Action, ToClient
from bft.requests import CACHED, KNOWN, REFUSED, STALE, busy_reply, cached_reply, stale_reply
from bft.rules import Drops, Rejection, Rule, StepRule, client_name, replica_name
from bft.wire import Message, Read, Request
from crypto.signing import Signer
from ledger.certificate import certified_block_error
from ledger.chain import Chain

T = TypeVar("T")


def highest_per_slot(proposals: Iterable[T], slot: Callable[[T], int], round_of: Callable[[T], int],
                     above: int) -> dict[int, T]:
    """For each slot above ``above``, the proposal of the highest round (the first seen on a tie).

    PBFT's NEW-VIEW picks, for each sequence number, the digest prepared in the highest view
    of its VIEW-CHANGEs (OSDI 1999, §4.4); a new Paxos leader re-proposes, for each slot, the
    value accepted in the highest ballot its promises report (Paxos Made Simple, §2.2). It
    is the same rule, and the same code."""
    best: dict[int, T] = {}
    for p in proposals:
        s = slot(p)
        if s <= above:
            continue
        cur = best.get(s)
        if cur is None or round_of(p) > round_of(cur):
            best[s] = p
    return best


def via(component: str, handler: str) -> Callable:
    """A component's message handler as an entry of a core's class-level ``_handlers`` table:
    ``via("checkpoints", "on_checkpoint")`` calls ``core.checkpoints.on_checkpoint(sender, msg)``."""
    get = attrgetter(f"{component}.{handler}")

    def dispatch(core, sender: int, msg: Message) -> None:
        get(core)(sender, msg)
    dispatch.__qualname__ = dispatch.__name__ = f"{component}.{handler}"
    return dispatch


def reads(component: str, attr: str) -> property:
    """A read-only core property for a component's state (drivers, tests and adversaries read it)."""
    return property(attrgetter(f"{component}.{attr}"), doc=f"``self.{component}.{attr}`` (read-only)")


class CoreSkeleton:
    """The driver interface's ``step`` and the drop counter; ``tick``/``ready`` are the protocol's."""

    _handlers: ClassVar[dict[type, Callable]]
    # the check of a block a peer serves in state transfer; a class attribute so that a lab
    # build of a core (bft.unsafe) can swap it
    check_served_block = staticmethod(certified_block_error)

    def _init_skeleton(self, cfg, replica_id: int, signer: Signer, keys, chain: Chain, now: float,
                       logger: logging.Logger) -> None:
        """What every core holds: its configuration, identity, keys, ledger, clock and output."""
        if not 0 <= replica_id < cfg.n:
            raise ValueError(f"replica id {replica_id} outside 0..{cfg.n - 1}")
        self.cfg = cfg
        self.id = replica_id
        self.signer = signer
        self.keys = keys
        self.chain = chain
        self.now = now
        self.n = cfg.n
        self.f = cfg.f
        self._out: list[Action] = []
        self.drops = Drops(logger, f"replica {self.id}")
        self.useless = 0                 # messages dropped or repeated: what the runtime's intake charges

    @property
    def dropped(self) -> Drops:
        return self.drops

    def step(self, sender: int, msg: Message, from_client: bool = False) -> None:
        """One message from an authenticated peer: a replica id, or a client id if from_client."""
        t = type(msg)
        if from_client:
            if t is Request:
                self._on_request(sender, msg)
            elif t is Read:
                self._on_read(sender, msg)
            else:
                self._drop(StepRule.CLIENT_SENT_PROTOCOL, client=sender)
            return
        if type(sender) is not int or not 0 <= sender < self.n or sender == self.id:
            self._drop(StepRule.NOT_A_MEMBER)
            return
        handler = self._handlers.get(t)
        if handler is None:
            self._drop(StepRule.UNEXPECTED_TYPE, sender, t.__name__)
            return
        if t is not Request and msg.replica != sender:        # a relayed request names its client
            self._drop(StepRule.SENDER_MISMATCH, sender)
            return
        handler(self, sender, msg)
        self._after_step()

    def _after_step(self) -> None:
        """Hook for work a core does once a message is handled (pbft drains held messages)."""

    def _on_request(self, client: int, req: Request) -> None:
        raise NotImplementedError

    def _on_read(self, client: int, m: Read) -> None:
        """A client's READ, answered without ordering (``bft.reads``)."""
        raise NotImplementedError

    def _answer_admission(self, client: int, req: Request, what: str, detail, view: int,
                          answer: bool = True) -> None:
        """What a client hears about a request that is not new (``RequestPool.admit``'s verdict):
        its cached reply, STALE, or BUSY over a budget (also counted as a drop); a request
        dropped by a rule is only counted. ``answer``: this replica answers cached and stale
        requests (a Paxos replica that does not lead leaves that to the leader)."""
        if what == CACHED:
            if answer:
                self._out.append(ToClient(client, cached_reply(view, self.id, client, detail)))
        elif what == STALE:
            if answer:
                self._out.append(ToClient(client, stale_reply(view, self.id, client, req.timestamp)))
        elif what == REFUSED:
            self._drop(detail, client=client)
            self._out.append(ToClient(client, busy_reply(view, self.id, client, req.timestamp, detail.text)))
        elif what != KNOWN:
            self._drop(detail, client=client)

    def count_useless(self) -> None:
        """A message that was valid but changed nothing (a repeat): the runtime's intake charges it."""
        self.useless += 1

    def _drop(self, rule: Rule | Rejection, replica: int | None = None, detail: str = "", *,
              client: int | None = None) -> None:
        """Count a message rejected by ``rule`` (a Rejection brings its own detail)."""
        if isinstance(rule, Rejection):
            rule, detail = rule.rule, rule.detail or detail
        who = replica_name(replica) if replica is not None else client_name(client) if client is not None else None
        self.drops.count(rule, who, detail)
        self.useless += 1

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
from typing import Callable, ClassVar

from bft.rules import Drops, Rejection, Rule, StepRule, client_name, replica_name
from bft.wire import Message, Request


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
    id: int
    n: int

    def _init_skeleton(self, logger: logging.Logger) -> None:
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

    def _drop(self, rule: Rule | Rejection, replica: int | None = None, detail: str = "", *,
              client: int | None = None) -> None:
        """Count a message rejected by ``rule`` (a Rejection brings its own detail)."""
        if isinstance(rule, Rejection):
            rule, detail = rule.rule, rule.detail or detail
        who = replica_name(replica) if replica is not None else client_name(client) if client is not None else None
        self.drops.count(rule, who, detail)
        self.useless += 1

"""Byzantine behaviours, as wrappers around an unmodified core.

The core keeps running honestly inside; the wrapper rewrites what it sends. The
simulator and the real replica process (``bftledger replica --byzantine NAME``) use the
same wrappers, so an attack seen in a seeded run is the attack a course runs on TCP.
"""
from __future__ import annotations

import random
from dataclasses import replace

from bft.outputs import Action, Broadcast, Send, ToClient
from bft.wire import Checkpoint, Commit, Message, PrePrepare, Prepare, PxAccept, PxAccepted, Reply, ViewChange
from crypto.signing import Signer

STRATEGIES = {
    "silent": "receives everything, sends nothing (a crashed or mute replica)",
    "wrong-digest": "votes (PREPARE/COMMIT/CHECKPOINT) for a digest nobody proposed, correctly signed",
    "corrupt": "sends its messages with corrupted signatures and corrupted replies to clients",
    "forge": "claims to be another replica: puts another id in its messages (signed with its own key)",
    "replay": "re-sends messages it sent long ago, from old views and sequence numbers",
    "flood": "sends every message many times over, hoping duplicates count twice",
    "equivocate": "as primary, sends different PRE-PREPAREs for one sequence number to different backups",
    "slow": "delays everything it sends by most of the view-change timeout (the driver applies the delay)",
}


class Byzantine:
    """Wraps a core: ``step``/``tick`` pass through, ``ready`` is rewritten by the strategy."""

    def __init__(self, core, strategy: str, signer: Signer, rng: random.Random) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; one of: {', '.join(STRATEGIES)}")
        self.core = core
        self.strategy = strategy
        self.signer = signer
        self.rng = rng
        self.history: list[Action] = []
        self.n = core.n

    def __getattr__(self, name: str):
        return getattr(self.core, name)

    def step(self, sender: int, msg: Message, from_client: bool = False) -> None:
        self.core.step(sender, msg, from_client)

    def tick(self, now: float) -> None:
        self.core.tick(now)

    def ready(self) -> list[Action]:
        out = self.core.ready()
        fn = getattr(self, "_" + self.strategy.replace("-", "_"), None)
        return fn(out) if fn is not None else out

    # -- strategies
    def _silent(self, out: list[Action]) -> list[Action]:
        return [a for a in out if not isinstance(a, (Send, Broadcast, ToClient))]

    def _resign(self, msg: Message, **changes) -> Message:
        m = replace(msg, **changes)
        return m.signed(self.signer) if m.SIGNED else m

    def _wrong_digest(self, out: list[Action]) -> list[Action]:
        res = []
        for a in out:
            if isinstance(a, (Send, Broadcast)) and type(a.msg) in (Prepare, Commit):
                a = replace(a, msg=self._resign(a.msg, digest=self.rng.randbytes(32)))
            elif isinstance(a, (Send, Broadcast)) and type(a.msg) is Checkpoint:
                a = replace(a, msg=self._resign(a.msg, head=self.rng.randbytes(32)))
            res.append(a)
        return res

    def _corrupt(self, out: list[Action]) -> list[Action]:
        res = []
        for a in out:
            if isinstance(a, (Send, Broadcast)) and a.msg.SIGNED:
                bad = bytearray(a.msg.sig)
                bad[self.rng.randrange(len(bad))] ^= 0xFF
                a = replace(a, msg=replace(a.msg, sig=bytes(bad)))
            elif isinstance(a, ToClient) and type(a.msg) is Reply:
                a = replace(a, msg=replace(a.msg, result=b"\xc0forged"))
            res.append(a)
        return res

    def _forge(self, out: list[Action]) -> list[Action]:
        res = []
        me = self.core.id
        for a in out:
            if isinstance(a, (Send, Broadcast)) and hasattr(a.msg, "replica"):
                other = (me + 1 + self.rng.randrange(self.n - 1)) % self.n
                a = replace(a, msg=self._resign(a.msg, replica=other))
            elif isinstance(a, ToClient) and type(a.msg) is Reply:
                other = (me + 1 + self.rng.randrange(self.n - 1)) % self.n
                a = replace(a, msg=replace(a.msg, replica=other, result=b"\xc0forged"))
            res.append(a)
        return res

    def _replay(self, out: list[Action]) -> list[Action]:
        sends = [a for a in out if isinstance(a, (Send, Broadcast))]
        self.history.extend(sends)
        if len(self.history) > 2000:
            del self.history[:1000]
        res = list(out)
        for _ in range(min(4, len(self.history))):
            res.append(self.history[self.rng.randrange(len(self.history))])
        return res

    def _flood(self, out: list[Action]) -> list[Action]:
        res = []
        for a in out:
            res.append(a)
            if isinstance(a, (Send, Broadcast)):
                res.extend([a] * 4)
        return res

    def _equivocate(self, out: list[Action]) -> list[Action]:
        """Backups with an even id see the real batch, odd ids a reordered or trimmed one."""
        res = []
        for a in out:
            if isinstance(a, Broadcast) and type(a.msg) in (PrePrepare, PxAccept) and a.msg.batch:
                from crypto.merkle import root_of
                pp = a.msg
                alt = list(reversed(pp.batch)) if len(pp.batch) > 1 else []
                alt_pp = self._resign(pp, batch=alt, digest=root_of(alt))
                for r in range(self.n):
                    if r != self.core.id:
                        res.append(Send(r, pp if r % 2 == 0 else alt_pp))
            else:
                res.append(a)
        return res

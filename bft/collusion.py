"""Coordinated Byzantine replicas: a team that splits the honest replicas in two.

The team's first member is the primary of view 0. For each batch it proposes, it sends the
real PRE-PREPARE to one half of the honest replicas and a different one (the batch
reversed, or a null request) to the other half; every member then sends PREPAREs and
COMMITs for each digest to the half that holds it, several times over (in case a core
counted a repeated vote twice). With at most f members the halves cannot both reach
2f PREPAREs and 2f+1 COMMITs, and the honest replicas agree. With f+1 members both halves
can, and commit different batches at one sequence number: the bound n = 3f+1 is tight,
which is what a course wants to show (Castro & Liskov, OSDI 1999, §4.5.1).

Used by the lab (``bftledger lab collude --byzantine-count K``, in the simulator or with
``--real``), the simulator's tests and real replicas (``bftledger replica --byzantine collude
--group 0,1``). A real team shares no memory: each member learns the (real, other) pair of a
batch from the primary's PRE-PREPARE, which the primary sends to every member, and derives
the other digest the way the primary does (``other_batch``).
"""
from __future__ import annotations

from dataclasses import replace

from bft.outputs import Action, Broadcast, Send
from bft.wire import Commit, PrePrepare, Prepare
from crypto.merkle import root_of
from crypto.signing import Signer


def other_batch(batch: list[bytes]) -> list[bytes]:
    """The batch the primary shows the second half: the same requests reversed, or none."""
    return list(reversed(batch)) if len(batch) > 1 else []


class Collusion:
    """The team's shared plan: which honest replicas get which digest, per (view, sequence)."""

    FLOOD = 4

    def __init__(self, n: int, members: list[int]) -> None:
        self.n = n
        self.members = set(members)
        honest = [r for r in range(n) if r not in self.members]
        self.halves = (honest[0::2], honest[1::2])          # real digest, other digest
        self.pairs: dict[tuple[int, int], tuple[bytes, bytes]] = {}

    def member(self, core, signer: Signer, rng=None) -> "Colluder":
        return Colluder(self, core, signer)


class Colluder:
    """Wraps a team member's core (the ``bft.adversary.Byzantine`` interface)."""

    def __init__(self, team: Collusion, core, signer: Signer) -> None:
        self.team, self.core, self.signer = team, core, signer
        self.strategy = "collude"
        self.active = True

    def __getattr__(self, name: str):
        return getattr(self.core, name)

    def step(self, sender: int, msg, from_client: bool = False) -> None:
        team = self.team
        if (not from_client and type(msg) is PrePrepare and sender in team.members and msg.batch
                and (msg.view, msg.seq) not in team.pairs):
            team.pairs[(msg.view, msg.seq)] = (msg.digest, root_of(other_batch(msg.batch)))
        self.core.step(sender, msg, from_client)

    def tick(self, now: float) -> None:
        self.core.tick(now)

    def _votes(self, view: int, seq: int, kinds) -> list[Action]:
        me, team = self.core.id, self.team
        out: list[Action] = []
        for digest, half in zip(team.pairs[(view, seq)], team.halves):
            for kind in kinds:
                vote = kind(view, seq, digest, me).signed(self.signer)
                out += [Send(r, vote) for r in half] * Collusion.FLOOD
        return out

    def ready(self) -> list[Action]:
        out: list[Action] = []
        team = self.team
        for a in self.core.ready():
            m = getattr(a, "msg", None)
            if isinstance(a, Broadcast) and type(m) is PrePrepare and m.batch and m.replica == self.core.id:
                alt = other_batch(m.batch)
                alt_pp = replace(m, batch=alt, digest=root_of(alt)).signed(self.signer)
                team.pairs[(m.view, m.seq)] = (m.digest, alt_pp.digest)
                out += [Send(r, m) for r in team.halves[0]] + [Send(r, alt_pp) for r in team.halves[1]]
                out += [Send(r, m) for r in team.members if r != self.core.id]
                out += self._votes(m.view, m.seq, (Commit,))
            elif isinstance(a, (Broadcast, Send)) and type(m) is Prepare and (m.view, m.seq) in team.pairs:
                out += self._votes(m.view, m.seq, (Prepare, Commit))
            else:
                out.append(a)
        return out

"""Script commands and message formats for reads not ordered (issue 15), apart from
tests/scripts.py, which is long already.

- ``read c0 [to=r1,r2|all] [key=k] [floor=N] [op=put] [as=c1] [repeat=N]``: client 0 sends a
  READ (default: ``get k`` at floor 0) to the replicas listed (default: every replica in
  pbft, r0 in paxos); ``op=put`` makes its operation a write, ``as=c1`` names another client.
- injected: ``px-read-index b= round= [ci=]`` and ``px-read-index-ack b= round=``.
- printed: ``read c0 nonce= floor=``, ``read-reply c0 nonce= h= since= <status> [value=]``,
  ``read-redirect c0 nonce= leader=``, ``px-read-index b= round= ci=``, ``px-read-index-ack b= round=``.
"""
from __future__ import annotations

from collections import Counter

from bft.wire import PxReadIndex, PxReadIndexAck, Read, ReadRedirect, ReadReply
from ledger.state import STATUS_NAMES, decode_result, op_get, op_put


def fmt_read_msg(m) -> str | None:
    """How a read message prints, or None for the other messages."""
    t = type(m)
    if t is Read:
        return f"read c{m.client} nonce={m.nonce} floor={m.min_height}"
    if t is ReadReply:
        try:
            status, value = decode_result(m.result)
            what = STATUS_NAMES.get(status, "?") + (f" value={value.decode(errors='replace')}"
                                                    if value is not None and status == 0 else "")
        except Exception:
            what = "?"
        return f"read-reply c{m.client} nonce={m.nonce} h={m.height} since={m.since} {what}"
    if t is ReadRedirect:
        return f"read-redirect c{m.client} nonce={m.nonce} leader=r{m.leader}"
    if t is PxReadIndex:
        return f"px-read-index b={m.ballot} round={m.round} ci={m.commit_index}"
    if t is PxReadIndexAck:
        return f"px-read-index-ack b={m.ballot} round={m.round}"
    return None


class ReadCommands:
    """Mixed into ``tests.scripts.Harness``."""

    def cmd_read(self, pos, kw, out) -> None:
        """read c0 [to=] [key=] [floor=] [op=put] [as=c1] [repeat=]"""
        nonces = self.__dict__.setdefault("read_nonces", Counter())
        c = self.client(pos[0]) if pos else 0
        to = self.replicas(kw.get("to", "all" if self.protocol == "pbft" else "0"))
        claimed = self.client(kw["as"]) if "as" in kw else c
        key = kw.get("key", "k")
        op = op_put(key, b"v") if kw.get("op") == "put" else op_get(key)
        for _ in range(self.num(kw, "repeat", 1)):
            nonces[c] += 1
            msg = Read(claimed, nonces[c], self.num(kw, "floor", 0), op)
            for i in to:
                if self.nodes[i].alive:
                    self._step(i, c, msg, True, out)
        if not out:
            out.append("ok")

    def msg_px_read_index(self, by, dst, kw, flags):
        return PxReadIndex(self.num(kw, "b", 0), self.num(kw, "round", 1), self.num(kw, "ci", 0), by)

    def msg_px_read_index_ack(self, by, dst, kw, flags):
        return PxReadIndexAck(self.num(kw, "b", 0), self.num(kw, "round", 1), by)

"""A replica's event log for message-sequence traces (``bftledger replica --trace-log FILE``).

Opt-in, for courses: one JSON line per message this replica received (with the rule that
dropped it, if one did), per message it sent, and per view or ballot it entered. The lab
(``bftledger lab ATTACK --real --trace FILE.html``) merges the logs of every replica into one
chart: a received message is matched to its sender's send by the hash of the frame body, so
an arrow starts when the sender wrote it and ends when the receiver read it. Times are wall
clock (``time.time``): the processes share one machine, hence one clock.

Costs a hash and a line per message; off by default, and nothing here runs when it is off.
"""
from __future__ import annotations

import hashlib
import json
import time
from collections import defaultdict, deque
from pathlib import Path
from typing import IO, Iterable

from bft.wire import describe


def body_hash(body: bytes | memoryview) -> str:
    return hashlib.blake2b(body, digest_size=8).hexdigest()


class TraceLog:
    def __init__(self, path: str | Path, lane: str) -> None:
        self.lane = lane
        self._view: int | None = None             # the last view or ballot logged
        self._fh: IO[str] | None = open(path, "a", encoding="utf-8", buffering=1 << 16)

    def _write(self, event: dict) -> None:
        if self._fh is not None:
            self._fh.write(json.dumps(event, separators=(",", ":")) + "\n")

    def received(self, src: str, msg, body: bytes, rule: str | None) -> None:
        self._write({"t": time.time(), "e": "recv", "src": src, "dst": self.lane, "kind": msg.NAME,
                     "label": describe(msg), "h": body_hash(body), "drop": rule})

    def sent(self, dst: str, msg, fr: bytes) -> None:
        self.sent_to((dst,), msg, fr)

    def sent_to(self, dsts: Iterable[str], msg, fr: bytes) -> None:
        """One frame sent to each of ``dsts`` (a broadcast: its label and hash made once)."""
        t, label, h = time.time(), describe(msg), body_hash(memoryview(fr)[4:])
        for dst in dsts:
            self._write({"t": t, "e": "send", "src": self.lane, "dst": dst, "kind": msg.NAME, "label": label, "h": h})

    def view(self, word: str, view: int) -> None:
        """The replica is in ``view`` (logged when it differs from the last one logged)."""
        if view != self._view:
            self._view = view
            self._write({"t": time.time(), "e": "view", "lane": self.lane, "word": word, "view": view})

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def read_events(paths: list[Path]) -> list[dict]:
    """Every event of the logs, in time order; a torn last line (a killed replica) is skipped."""
    events: list[dict] = []
    for p in paths:
        try:
            text = p.read_text(encoding="utf-8")
        except OSError:
            continue
        for line in text.splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if isinstance(ev, dict) and isinstance(ev.get("t"), (int, float)):
                events.append(ev)
    events.sort(key=lambda ev: ev["t"])
    return events


def merge(events: list[dict], recorder, t0: float) -> int:
    """Feed the events into a ``bft.sim.trace.TraceRecorder`` (times relative to ``t0``); returns
    how many arrows were drawn. A message received with no matching send (a client's request,
    or a send logged by a replica without a trace log) starts where it ends; a send to a
    client, which keeps no log, ends where it starts."""
    sends: dict[tuple[str, str, str], deque[float]] = defaultdict(deque)
    for ev in events:
        if ev.get("e") == "send":
            sends[(ev["src"], ev["dst"], ev["h"])].append(ev["t"])
    drawn = 0
    for ev in events:
        kind = ev.get("e")
        if kind == "recv":
            q = sends.get((ev["src"], ev["dst"], ev["h"]))
            sent = q.popleft() if q else ev["t"]
            recorder.add_arrow(sent - t0, ev["t"] - t0, ev["src"], ev["dst"], ev["kind"], ev["label"], ev.get("drop"))
            drawn += 1
        elif kind == "send" and ev["dst"].startswith("client"):
            recorder.add_arrow(ev["t"] - t0, ev["t"] - t0, ev["src"], ev["dst"], ev["kind"], ev["label"], None)
            drawn += 1
        elif kind == "view":
            recorder.view(ev["t"] - t0, ev["lane"], ev["word"], ev["view"])
    return drawn

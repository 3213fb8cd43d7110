"""The merge of real replicas' trace logs (bft.runtime.tracelog): a received message is drawn
from its sender's send, matched by the frame body's hash, first sent first matched."""
from __future__ import annotations

from bft.runtime.tracelog import TraceLog, body_hash, merge, read_events
from bft.sim.trace import TraceRecorder
from bft.wire import Prepare
from ledger.wire import frame


def test_a_receive_is_drawn_from_the_matching_send_and_drops_keep_their_rule(tmp_path) -> None:
    a, b = Prepare(0, 1, b"\x01" * 32, 1, b"s" * 64), Prepare(0, 2, b"\x02" * 32, 1, b"s" * 64)
    fa, fb = frame(a.encode()), frame(b.encode())
    assert body_hash(memoryview(fa)[4:]) == body_hash(a.encode())
    events = [
        {"t": 10.0, "e": "send", "src": "r1", "dst": "r2", "kind": "prepare", "label": "pa", "h": body_hash(a.encode())},
        {"t": 10.1, "e": "send", "src": "r1", "dst": "r2", "kind": "prepare", "label": "pb", "h": body_hash(b.encode())},
        {"t": 10.3, "e": "recv", "src": "r1", "dst": "r2", "kind": "prepare", "label": "pb", "h": body_hash(b.encode()),
         "drop": "pbft.OUTSIDE_WATERMARKS"},
        {"t": 10.4, "e": "recv", "src": "r1", "dst": "r2", "kind": "prepare", "label": "pa", "h": body_hash(a.encode()),
         "drop": None},
        {"t": 10.5, "e": "recv", "src": "client0", "dst": "r2", "kind": "request", "label": "rq", "h": "00",
         "drop": None},
        {"t": 10.6, "e": "send", "src": "r2", "dst": "client0", "kind": "reply", "label": "rp", "h": "01"},
        {"t": 10.7, "e": "view", "lane": "r2", "word": "view", "view": 1},
    ]
    rec = TraceRecorder()
    assert merge(events, rec, 10.0) == 4
    got = [(round(x.sent, 3), round(x.delivered, 3), x.src, x.dst, x.label, x.dropped) for x in rec.arrows]
    assert got == [(0.1, 0.3, "r1", "r2", "pb", "pbft.OUTSIDE_WATERMARKS"), (0.0, 0.4, "r1", "r2", "pa", None),
                   (0.5, 0.5, "client0", "r2", "rq", None), (0.6, 0.6, "r2", "client0", "rp", None)]
    assert [(round(t, 3), lane, text) for t, lane, text in rec.marks] == [(0.7, "r2", "view 1")]


def test_a_replica_log_round_trips_and_a_torn_line_is_skipped(tmp_path) -> None:
    p = Prepare(0, 1, b"\x01" * 32, 1, b"s" * 64)
    log = TraceLog(tmp_path / "r1.jsonl", "r1")
    log.sent("r2", p, frame(p.encode()))
    log.received("r2", p, p.encode(), "pbft.DUPLICATE_VOTE")
    log.view("view", 3)
    log.close()
    with open(tmp_path / "r1.jsonl", "a") as fh:
        fh.write('{"t": 1.0, "e": "se')                 # the replica was killed mid-line
    events = read_events([tmp_path / "r1.jsonl", tmp_path / "missing.jsonl"])
    assert [e["e"] for e in events] == ["send", "recv", "view"]
    assert events[0]["h"] == events[1]["h"] and events[1]["drop"] == "pbft.DUPLICATE_VOTE"
    assert events[0]["label"].startswith("prepare v=0 n=1")

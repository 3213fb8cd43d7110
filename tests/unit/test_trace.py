"""The lab's message-sequence trace (bft.sim.trace): one self-contained HTML page whose
arrows are the run's messages. ``make test-browser`` renders it in headless Chromium."""
from __future__ import annotations

import json
import re
from html import unescape

from bft.app.cli import main
from bft.sim.lab import run_lab
from bft.sim.trace import TraceRecorder


def test_the_trace_has_one_arrow_per_message_marks_drops_and_fetches_nothing(tmp_path, capsys) -> None:
    path = tmp_path / "eq.html"
    assert main(["lab", "equivocate", "--trace", str(path)]) == 0
    capsys.readouterr()
    page = path.read_text()
    rec = TraceRecorder()
    r = run_lab("equivocate", recorder=rec)                 # the same run: the same seed
    meta = json.loads(unescape(re.search(r'data-meta="([^"]*)"', page).group(1)))
    assert meta["arrows"] == len(rec.arrows) == page.count('<g class="msg') > 100
    dropped = [a for a in rec.arrows if a.dropped]
    assert meta["dropped"] == len(dropped) == page.count('<g class="msg dropped"') > 0
    assert "DROPPED pbft.CONFLICTING_PRE_PREPARE" in page            # a drop names its rule
    assert meta["lanes"] == ["r0", "r1", "r2", "r3", "client0", "client1", "client2"]
    assert meta["byzantine"] == ["r0"] and page.count('class="lane byzantine"') == 1
    assert 'class="view"' in page and "view 1" in page                # the view change is marked
    assert r.replay in page
    for external in ("<link", "src=", "@import", "url(http", "href=\"http"):
        assert external not in page, external                       # nothing fetched from anywhere


def test_a_partition_is_a_band_with_its_groups() -> None:
    rec = TraceRecorder()
    run_lab("split-brain", mode="paxos", recorder=rec)
    assert [b.what for b in rec.bands if b.lane is None][0].startswith("partition ")
    assert all(b.end is not None and b.end > b.start for b in rec.bands)

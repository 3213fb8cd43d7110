"""Message-sequence traces of a simulated run, as one self-contained HTML file.

The simulator records, when asked, every delivered message (who sent it when, who got it
when, its kind, view or ballot, sequence and digest prefix, and the rule by which the
receiver dropped it, if it did), every crash, restart and partition, and every view a
replica enters. ``render_html`` draws them as a message-sequence chart: one lane per replica
and per client, one arrow per message, dropped ones dashed and labelled with the rule,
Byzantine lanes highlighted, faults and view changes as bands. The page holds everything it
needs (inline SVG, a few lines of script to filter by kind and to zoom to a time window): it
fetches nothing, so a course can hand it out as a file.
"""
from __future__ import annotations

import html
import json
from dataclasses import dataclass, field

from bft.wire import describe

LANE = 130              # pixels between lanes
ROW = 16                # pixels between two successive instants (the time axis is ordinal, as in MSCs:
                        # network delays are milliseconds and timeouts seconds; a linear axis shows neither)
TOP = 70


@dataclass
class Arrow:
    sent: float
    delivered: float
    src: str
    dst: str
    kind: str
    label: str
    dropped: str | None = None        # the rule label, when the receiver dropped it


@dataclass
class Band:
    start: float
    end: float | None
    lane: str | None                  # None: across every lane (a partition)
    what: str


@dataclass
class TraceRecorder:
    arrows: list[Arrow] = field(default_factory=list)
    bands: list[Band] = field(default_factory=list)
    marks: list[tuple[float, str, str]] = field(default_factory=list)   # (t, lane, text): views entered
    _open: dict[str, Band] = field(default_factory=dict)

    def message(self, sent: float, delivered: float, src: str, dst: str, msg, dropped: str | None) -> None:
        self.add_arrow(sent, delivered, src, dst, msg.NAME, describe(msg), dropped)

    def add_arrow(self, sent: float, delivered: float, src: str, dst: str, kind: str, label: str,
                  dropped: str | None) -> None:
        """An arrow from a real replica's trace log (``bft.runtime.tracelog``)."""
        self.arrows.append(Arrow(sent, delivered, src, dst, kind, label, dropped))

    def crash(self, t: float, lane: str) -> None:
        self._open[lane] = b = Band(t, None, lane, "crashed")
        self.bands.append(b)

    def restart(self, t: float, lane: str) -> None:
        b = self._open.pop(lane, None)
        if b is not None:
            b.end = t

    def partition(self, t: float, groups) -> None:
        b = self._open.pop("*partition*", None)
        if b is not None:
            b.end = t
        if groups:
            text = " | ".join(",".join(sorted(map(str, g))) for g in groups)
            self._open["*partition*"] = b = Band(t, None, None, f"partition {text}")
            self.bands.append(b)

    def view(self, t: float, lane: str, word: str, view: int) -> None:
        self.marks.append((t, lane, f"{word} {view}"))

    def close(self, t: float) -> None:
        for b in self._open.values():
            if b.end is None:
                b.end = t
        self._open.clear()


def render_html(rec: TraceRecorder, lanes: list[str], byzantine: list[str], title: str, summary: list[str]) -> str:
    """The trace as one HTML page (inline SVG and script, no external resources)."""
    x = {lane: 90 + i * LANE for i, lane in enumerate(lanes)}
    end = max([a.delivered for a in rec.arrows] + [b.end or 0 for b in rec.bands] + [0.001])
    instants = sorted({t for a in rec.arrows for t in (a.sent, a.delivered)}
                      | {t for b in rec.bands for t in (b.start, b.end if b.end is not None else end)}
                      | {m[0] for m in rec.marks})
    row = {t: i for i, t in enumerate(instants)}
    height = TOP + ROW * len(instants) + 60
    width = 90 + LANE * len(lanes)
    y = lambda t: TOP + ROW * row[t]                            # noqa: E731
    svg: list[str] = []
    for b in rec.bands:
        stop = b.end if b.end is not None else end
        tall = max(1.0, y(stop) - y(b.start))
        if b.lane is None:
            svg.append(f'<rect class="band partition" x="0" y="{y(b.start):.1f}" width="{width}" '
                       f'height="{tall:.1f}" data-t="{b.start:.4f}"><title>{html.escape(b.what)}</title></rect>'
                       f'<text class="band-name" x="8" y="{y(b.start) + 12:.1f}">{html.escape(b.what)}</text>')
        else:
            svg.append(f'<rect class="band crash" x="{x[b.lane] - 14}" y="{y(b.start):.1f}" width="28" '
                       f'height="{tall:.1f}" data-t="{b.start:.4f}">'
                       f'<title>{html.escape(b.lane)} {html.escape(b.what)}</title></rect>')
    for lane in lanes:
        cls = "lane byzantine" if lane in byzantine else "lane"
        svg.append(f'<line class="{cls}" x1="{x[lane]}" y1="{TOP - 20}" x2="{x[lane]}" y2="{height}"/>'
                   f'<text class="lane-name" x="{x[lane]}" y="{TOP - 30}">{html.escape(lane)}'
                   f'{" (Byzantine)" if lane in byzantine else ""}</text>')
    for t, lane, text in rec.marks:
        svg.append(f'<g class="view" data-t="{t:.4f}"><line x1="{x[lane] - 40}" y1="{y(t):.1f}" x2="{x[lane] + 40}" '
                   f'y2="{y(t):.1f}"/><text x="{x[lane] + 44}" y="{y(t) + 4:.1f}">{html.escape(text)}</text></g>')
    for a in rec.arrows:
        cls = "msg dropped" if a.dropped else "msg"
        label = a.label + (f" DROPPED {a.dropped}" if a.dropped else "")
        x1, x2, y1, y2 = x[a.src], x[a.dst], y(a.sent), y(a.delivered)
        svg.append(f'<g class="{cls}" data-kind="{html.escape(a.kind)}" data-t="{a.sent:.4f}">'
                   f'<line x1="{x1}" y1="{y1:.1f}" x2="{x2}" y2="{y2:.1f}" marker-end="url(#head)"/>'
                   f'<text x="{(x1 + x2) / 2:.1f}" y="{(y1 + y2) / 2 - 2:.1f}">{html.escape(label)}</text></g>')
    kinds = sorted({a.kind for a in rec.arrows})
    meta = {"arrows": len(rec.arrows), "dropped": sum(1 for a in rec.arrows if a.dropped),
            "lanes": lanes, "byzantine": byzantine, "kinds": kinds, "end": round(end, 4)}
    options = "".join(f'<label><input type="checkbox" class="kind" value="{html.escape(k)}" checked> '
                      f'{html.escape(k)}</label> ' for k in kinds)
    return _PAGE.format(title=html.escape(title), summary="".join(f"<li>{html.escape(s)}</li>" for s in summary),
                        width=width, height=height, svg="\n".join(svg), options=options,
                        meta=html.escape(json.dumps(meta)), end=f"{end:.3f}")


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font: 13px sans-serif; margin: 1em; }}
#chart text {{ font-size: 10px; text-anchor: middle; }}
.lane {{ stroke: #888; stroke-width: 1; }}
.lane.byzantine {{ stroke: #c00; stroke-width: 4; }}
.lane-name {{ font-weight: bold; font-size: 12px !important; }}
.band-name {{ text-anchor: start !important; fill: #a60; }}
.msg line {{ stroke: #246; stroke-width: 1; }}
.msg.dropped line {{ stroke: #c00; stroke-dasharray: 4 3; }}
.msg.dropped text {{ fill: #c00; }}
.band.partition {{ fill: #fd9; opacity: 0.35; }}
.band.crash {{ fill: #999; opacity: 0.5; }}
.view line {{ stroke: #080; stroke-width: 3; }}
.view text {{ fill: #080; text-anchor: start !important; font-weight: bold; }}
.hidden {{ display: none; }}
#controls {{ position: sticky; top: 0; background: #fff; padding: 0.5em 0; border-bottom: 1px solid #ccc; }}
</style></head>
<body data-meta="{meta}">
<h1>{title}</h1>
<ul>{summary}</ul>
<div id="controls">
show seconds <input id="t0" type="number" step="0.01" value="0"> to
<input id="t1" type="number" step="0.01" value="{end}"> <button id="apply">apply</button>
&nbsp; kinds: {options}
&nbsp; <span id="count"></span>
</div>
<svg id="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}">
<defs><marker id="head" markerWidth="8" markerHeight="8" refX="8" refY="4" orient="auto">
<path d="M0,0 L8,4 L0,8 z" fill="#246"/></marker></defs>
{svg}
</svg>
<script>
(function () {{
  const chart = document.getElementById("chart");
  const full = chart.getAttribute("height");
  function apply() {{
    const t0 = parseFloat(document.getElementById("t0").value) || 0;
    const t1 = parseFloat(document.getElementById("t1").value) || {end};
    const on = new Set(Array.from(document.querySelectorAll("input.kind:checked")).map(e => e.value));
    let shown = 0;
    chart.querySelectorAll("[data-t]").forEach(el => {{
      const t = parseFloat(el.dataset.t);
      const kind = el.dataset.kind;
      const visible = t >= t0 && t <= t1 && (kind === undefined || on.has(kind));
      el.classList.toggle("hidden", !visible);
      if (visible && el.classList.contains("msg")) shown += 1;
    }});
    let lo = Infinity, hi = -Infinity;                 // zoom to what is shown
    chart.querySelectorAll("g.msg:not(.hidden) line").forEach(l => {{
      lo = Math.min(lo, +l.getAttribute("y1"), +l.getAttribute("y2"));
      hi = Math.max(hi, +l.getAttribute("y1"), +l.getAttribute("y2"));
    }});
    if (lo > hi) {{ lo = 0; hi = +full; }}
    const y0 = Math.max(0, lo - 60), h = hi - y0 + 40;
    chart.setAttribute("viewBox", "0 " + y0 + " " + chart.getAttribute("width") + " " + h);
    chart.setAttribute("height", h);
    document.getElementById("count").textContent = shown + " messages shown";
    document.body.dataset.shown = shown;
  }}
  const hash = new URLSearchParams(location.hash.slice(1));     // e.g. trace.html#t0=0.1&t1=0.3
  if (hash.has("t0")) document.getElementById("t0").value = hash.get("t0");
  if (hash.has("t1")) document.getElementById("t1").value = hash.get("t1");
  document.getElementById("apply").addEventListener("click", apply);
  document.querySelectorAll("input.kind").forEach(e => e.addEventListener("change", apply));
  apply();
  document.body.dataset.rendered = chart.querySelectorAll("g.msg line").length;
}})();
</script>
</body></html>
"""

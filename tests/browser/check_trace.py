"""Renders a lab trace in headless Chromium and checks the rendered page (``make test-browser``).

The page's script counts the arrows it drew (``data-rendered``) and those it shows in the
window asked for in the URL (``data-shown``); Chromium's ``--dump-dom`` gives the DOM after
the script ran. Also takes a screenshot and checks it is a real image. Exit status 0 when
everything matches, 1 with one line per problem otherwise.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from html import unescape
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def main() -> int:
    browser = next((b for b in map(shutil.which, BROWSERS) if b), None)
    if browser is None:
        print("error: no chromium on PATH; 'make test-browser' installs it (apt-get install chromium, as root)")
        return 1
    problems = []
    with tempfile.TemporaryDirectory() as d:
        page = Path(d) / "trace.html"
        run = subprocess.run([sys.executable, "-m", "bft", "lab", "equivocate", "--trace", str(page)],
                             capture_output=True, text=True, cwd=ROOT, timeout=120)
        if run.returncode != 0:
            print(f"error: the lab failed: {run.stderr.strip()}")
            return 1
        meta = json.loads(unescape(re.search(r'data-meta="([^"]*)"', page.read_text()).group(1)))
        flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                 f"--user-data-dir={d}/profile"]
        dom = subprocess.run(flags + ["--dump-dom", f"file://{page}#t0=0&t1=0.115"], capture_output=True,
                             text=True, timeout=120).stdout
        rendered = re.search(r'data-rendered="(\d+)"', dom)
        shown = re.search(r'data-shown="(\d+)"', dom)
        if rendered is None or int(rendered.group(1)) != meta["arrows"]:
            problems.append(f"the browser drew {rendered and rendered.group(1)} arrows, the run had {meta['arrows']}")
        if shown is None or not 0 < int(shown.group(1)) < meta["arrows"]:
            problems.append(f"the time window shows {shown and shown.group(1)} messages: not a window")
        shot = Path(d) / "trace.png"
        subprocess.run(flags + ["--window-size=1100,1000", f"--screenshot={shot}", f"file://{page}#t0=0&t1=0.115"],
                       capture_output=True, timeout=120)
        if not shot.exists() or shot.read_bytes()[:8] != b"\x89PNG\r\n\x1a\n" or shot.stat().st_size < 20_000:
            problems.append("no screenshot, or an empty one")
        else:
            print(f"rendered {meta['arrows']} arrows ({meta['dropped']} dropped), "
                  f"{shown.group(1) if shown else '?'} in the window; screenshot {shot.stat().st_size} bytes")
    for p in problems:
        print(f"error: {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

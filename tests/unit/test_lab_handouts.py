"""Every command of every lab handout (docs/labs/*.md) runs, and shows what the handout says.

A handout's console blocks hold ``$ bftledger ...`` commands, each followed by ``> text``
lines: text the command's output must contain. The commands run in-process through the CLI's
``main`` (the simulator; a second or two each)."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from bft.app.cli import main

LABS = sorted((Path(__file__).resolve().parents[2] / "docs" / "labs").glob("[0-9]*.md"))


def commands(path: Path) -> list[tuple[list[str], list[str]]]:
    out = []
    for block in re.findall(r"```console\n(.*?)```", path.read_text(), flags=re.S):
        for line in block.splitlines():
            if line.startswith("$ "):
                argv = shlex.split(line[2:])
                assert argv[0] == "bftledger", line
                out.append((argv[1:], []))
            elif line.startswith("> "):
                out[-1][1].append(line[2:])
    return out


def test_there_are_at_least_five_handouts_each_with_commands() -> None:
    assert len(LABS) >= 5
    for lab in LABS:
        text = lab.read_text()
        assert commands(lab), lab.name
        assert "**Goals.**" in text and "## Questions" in text, lab.name


@pytest.mark.parametrize("lab", LABS, ids=lambda p: p.stem)
def test_every_command_of_the_handout_shows_what_it_says(lab: Path, capsys) -> None:
    for argv, expected in commands(lab):
        code = main(argv)
        got = capsys.readouterr()
        text = got.out + got.err
        assert code in (0, 2), (argv, text)
        for want in expected:
            assert want in text, f"{lab.name}: 'bftledger {' '.join(argv)}' does not show {want!r}:\n{text}"

"""The import graph follows the layers (issue 13, "Layers that show").

Every module of ``crypto/``, ``ledger/`` and ``bft/`` is parsed with ``ast`` (nothing is
imported or run) and every import in it is an edge, including imports made inside
functions and ``importlib.import_module("...")`` / ``__import__("...")`` with a literal
name. The layers, from the bottom:

    crypto              imports nothing of this project but crypto
    ledger              + crypto                         (the ledger, its client, its wire)
    bft (protocol)      + ledger: wire, outputs, rules, skeleton, requests, catchup,
                          adversary, pbft/, paxos/       (sans-I/O: no runtime, sim or app)
    bft.runtime         + the protocol                   (the trio replicas)
    bft.sim             + the protocol                   (the deterministic simulator)
    bft.app             anything                         (CLI, demos, cluster set-up, hostile tools)

The runtime and the simulator are two drivers of the same cores and do not import each
other. A failure names the module, the line and the edge.
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("crypto", "ledger", "bft")

# layer -> the layers it may import
ALLOWED = {
    "crypto": {"crypto"},
    "ledger": {"crypto", "ledger"},
    "protocol": {"crypto", "ledger", "protocol"},
    "runtime": {"crypto", "ledger", "protocol", "runtime"},
    "sim": {"crypto", "ledger", "protocol", "sim"},
    "app": {"crypto", "ledger", "protocol", "runtime", "sim", "app"},
}


def layer(module: str) -> str | None:
    """The layer of a project module, or None for anything outside the project."""
    top = module.split(".")[0]
    if top in ("crypto", "ledger"):
        return top
    if top != "bft":
        return None
    parts = module.split(".")
    if len(parts) == 1:
        return "protocol"                       # the package itself (its __init__ is empty)
    if parts[1] in ("runtime", "sim", "app"):
        return parts[1]
    if parts[1] == "__main__":                  # ``python -m bft`` runs the CLI
        return "app"
    return "protocol"


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, imported module) for every import in ``source``, wherever it is written."""
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((node.lineno, target))
            # ``from bft import app`` imports the module bft.app
            out.extend((node.lineno, f"{target}.{a.name}") for a in node.names if a.name != "*")
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else ""
            if name in ("import_module", "__import__"):
                out.append((node.lineno, node.args[0].value))
    return out


def violations(module: str, source: str, is_package: bool = False) -> list[str]:
    mine = layer(module)
    worst: dict[tuple[int, str], str] = {}          # (line, layer) -> the shortest module name imported
    for line, target in imports(source, module, is_package):
        theirs = layer(target)
        if mine is None or theirs is None or theirs in ALLOWED[mine]:
            continue
        key = (line, theirs)
        if key not in worst or len(target) < len(worst[key]):
            worst[key] = target
    return [f"{module} (line {line}) imports {target}: a {mine} module may not import the {theirs} layer"
            for (line, theirs), target in sorted(worst.items())]


def project_modules() -> list[tuple[str, Path]]:
    found = []
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            found.append((module_name(path), path))
    return found


def test_the_import_graph_follows_the_layers() -> None:
    modules = project_modules()
    assert len(modules) > 50, "the walk found too few modules"
    bad = []
    for module, path in modules:
        bad.extend(violations(module, path.read_text(), path.name == "__init__.py"))
    assert not bad, "upward imports:\n  " + "\n  ".join(bad)


def test_every_bft_module_has_a_layer() -> None:
    names = {module for module, _ in project_modules()}
    assert {"bft.wire", "bft.outputs", "bft.pbft.core", "bft.paxos.core", "bft.runtime.replica", "bft.sim.world",
            "bft.app.cli", "ledger.client", "ledger.wire", "ledger.clientcore", "ledger.net.session"} <= names
    assert layer("bft.pbft.core") == "protocol" and layer("bft.adversary") == "protocol"
    assert layer("bft.runtime.replica") == "runtime" and layer("bft.sim.world") == "sim"
    assert layer("bft.app.cli") == layer("bft.__main__") == "app"


def test_the_check_sees_every_kind_of_upward_import() -> None:
    """The checker itself: each of these sources must be flagged."""
    cases = {
        ("crypto.merkle", "import ledger.block"): "crypto.merkle (line 1) imports ledger.block",
        ("ledger.client", "def f():\n    from bft.runtime import client\n"): "imports bft.runtime",
        ("ledger.client", "import importlib\nimportlib.import_module('bft.wire')"): "imports bft.wire",
        ("bft.pbft.core", "from bft import app"): "imports bft.app",
        ("bft.pbft.core", "from ..sim import world"): "imports bft.sim",
        ("bft.wire", "from bft.runtime.channel import channels_for"): "imports bft.runtime.channel",
        ("bft.runtime.replica", "from bft.app.clusterinit import init_cluster"): "imports bft.app",
        ("bft.sim.world", "from bft.runtime import factory"): "imports bft.runtime",
    }
    for (module, source), expected in cases.items():
        found = violations(module, source)
        assert any(expected in v for v in found), (module, source, found)
    assert violations("bft.app.cli", "from bft.runtime import procs\nimport bft.sim.world") == []
    assert violations("bft.runtime.replica", "from ledger.net.channel import channels_for\nfrom bft.wire import "
                                             "Request") == []

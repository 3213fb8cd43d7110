"""Replicas on hosts of their own: one network namespace per replica on a bridge that the
test creates and always removes (needs root and iproute2, as CI has).

Addresses are a private /24 that exists only on that bridge; the test process (the
clients) sits on the bridge too. Nemeses: ``isolate`` takes a replica's link down (cut off
from everyone, clients included); ``cut`` blocks the traffic between two replicas in both
directions with prohibit routes, so clients still reach both sides; ``heal`` undoes all.
"""
from __future__ import annotations

import os
import subprocess
import tomllib
from pathlib import Path

from ledger import cluster as clustermod

PORT = 21000


def _ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, capture_output=True, timeout=10)


class Hosts:
    def __init__(self, n: int, tag: str) -> None:
        self.n = n
        self.tag = tag                                   # a few characters; interface names are short
        net = 16 + int(tag, 36) % 200
        self.ips = [f"10.251.{net}.{i + 1}" for i in range(n)]
        self.gateway = f"10.251.{net}.254"
        self.bridge = f"bftb{tag}"
        self.ns = [f"bft{tag}r{i}" for i in range(n)]
        self.cuts: set[tuple[int, int]] = set()

    def veth(self, i: int) -> str:
        return f"bv{self.tag}{i}"

    def up(self) -> "Hosts":
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for i, ns in enumerate(self.ns):
                _ip("netns", "add", ns)
                _ip("link", "add", self.veth(i), "type", "veth", "peer", "name", f"bp{self.tag}{i}")
                _ip("link", "set", f"bp{self.tag}{i}", "netns", ns)
                _ip("-n", ns, "addr", "add", f"{self.ips[i]}/24", "dev", f"bp{self.tag}{i}")
                _ip("-n", ns, "link", "set", f"bp{self.tag}{i}", "up")
                _ip("-n", ns, "link", "set", "lo", "up")
                _ip("link", "set", self.veth(i), "master", self.bridge)
                _ip("link", "set", self.veth(i), "up")
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        for ns in self.ns:
            _ip("netns", "delete", ns, check=False)          # takes its end of the veth pair along
        for i in range(self.n):
            _ip("link", "delete", self.veth(i), check=False)
        _ip("link", "delete", self.bridge, check=False)

    def wrap(self) -> dict[int, list[str]]:
        """The command prefix that runs replica i in its namespace."""
        return {i: ["ip", "netns", "exec", ns] for i, ns in enumerate(self.ns)}

    def place(self, cluster_dir: Path) -> None:
        """Rewrite cluster.toml so that replica i listens on its namespace's address (the cluster
        id does not cover addresses, so the keys, certificates and id stay valid)."""
        c = clustermod.load(cluster_dir)
        doc = tomllib.loads((cluster_dir / "cluster.toml").read_text())
        clustermod.write(cluster_dir, c.mode, c.f, [(ip, PORT) for ip in self.ips], c.replica_keys(),
                         list(c.clients), genesis_nonce=bytes.fromhex(doc["genesis_nonce"]), transport=c.transport)

    # ------------------------------------------------------------------ nemeses
    def isolate(self, i: int, cut_off: bool = True) -> None:
        _ip("link", "set", self.veth(i), "down" if cut_off else "up")

    def cut(self, i: int, j: int) -> None:
        for a, b in ((i, j), (j, i)):
            if (a, b) not in self.cuts:
                _ip("-n", self.ns[a], "route", "add", "prohibit", f"{self.ips[b]}/32")
                self.cuts.add((a, b))

    def heal(self) -> None:
        for a, b in sorted(self.cuts):
            _ip("-n", self.ns[a], "route", "del", "prohibit", f"{self.ips[b]}/32", check=False)
        self.cuts.clear()
        for i in range(self.n):
            self.isolate(i, False)


def tag() -> str:
    """Short and unique per test run (pid) and test (a counter)."""
    tag.count = getattr(tag, "count", 0) + 1
    return f"{os.getpid() % 1296:x}{tag.count % 36}"

"""An interpreter for data-driven scenario scripts (etcd raft's ``testdata/*.txt`` style).

A script is a sequence of commands, each followed by ``----`` and the output it must
produce, then a blank line; ``#`` lines between commands are comments. The interpreter
drives the real protocol cores (``bft.pbft.core.PbftCore``, ``bft.paxos.core.PaxosCore``)
through an in-memory network it controls message by message, and prints only what stays
stable when the cores' internals change: the actions of ``ready()``, fields of
``status()`` and the drop counters (``drops.as_json()``). See tests/testdata/README.md for
the commands.

Everything is deterministic: keys are keyed hashes of fixed secrets, the paxos cores draw
their timeouts from seeded ``random.Random`` objects, and time only moves with ``tick``.
"""
from __future__ import annotations

import hashlib
import random
import shlex
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import msgpack

from bft.outputs import AppendBlock, Broadcast, CompactVotes, Persist, Send, ServeBlocks, ToClient
from bft.paxos.config import PaxosConfig
from bft.paxos.core import PaxosCore
from bft.pbft.certs import Keys, plan_new_view, primary
from bft.pbft.config import PbftConfig
from bft.pbft.core import PbftCore
from bft.pbft.monitor import MonitorConfig
from bft.wire import (BatchRequest, BatchResponse, Checkpoint, Commit, NewView, PrePrepare, Prepare, PreparedCert,
                      PxAccept, PxAccepted, PxHeartbeat, PxNack, PxPrepare, PxPreVote, PxPreVoteGrant, PxPromise,
                      Redirect, Reply, Request, StateRequest, StateResponse, Suspect, ViewChange)
from crypto.merkle import root_of
from crypto.signing import HashSigner, HashVerifier
from crypto import tls
from ledger.block import Block
from ledger.chain import Chain
from ledger.clients import ClientKeys
from ledger.state import STATUS_NAMES, decode_result, op_addclient, op_get, op_put
from tests.script_reads import ReadCommands, fmt_read_msg

NULL = root_of([])
FORGER = HashSigner(b"nobody's key")
MAX_REPLICAS = 16
MAX_CLIENTS = 8


class ScriptError(Exception):
    """A command the interpreter cannot run (bad arguments): reported as the command's output."""


# ============================================================================ the file format
@dataclass
class Case:
    pre: list[str]            # comment and blank lines before the command, verbatim
    cmd: str
    expected: str
    line: int                 # 1-based line of the command


def parse(text: str) -> tuple[list[Case], list[str]]:
    """The cases of a script and the trailing comment lines."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    cases: list[Case] = []
    pre: list[str] = []
    i = 0
    while i < len(lines):
        ln = lines[i]
        if not ln.strip() or ln.lstrip().startswith("#"):
            pre.append(ln)
            i += 1
            continue
        cmd, line_no = ln, i + 1
        i += 1
        if i >= len(lines) or lines[i] != "----":
            raise ScriptError(f"line {line_no}: command {cmd!r} is not followed by a '----' line")
        i += 1
        out: list[str] = []
        while i < len(lines) and lines[i] != "":
            out.append(lines[i])
            i += 1
        if i < len(lines):
            i += 1                                  # the blank line that ends the output
        cases.append(Case(pre, cmd, "\n".join(out), line_no))
        pre = []
    return cases, pre


def render(cases: list[Case], trailer: list[str]) -> str:
    parts: list[str] = []
    for c in cases:
        parts.extend(c.pre)
        parts.append(c.cmd)
        parts.append("----")
        parts.append(c.expected)
        parts.append("")
    parts.extend(trailer)
    return "\n".join(parts).rstrip("\n") + "\n"


def run_file(path: Path) -> tuple[list[Case], list[Case], list[str]]:
    """(the cases as written, the cases with the outputs produced now, trailing lines)."""
    protocol = path.parent.name
    cases, trailer = parse(path.read_text())
    h = Harness(protocol)
    got = []
    for c in cases:
        try:
            out = h.run(c.cmd)
        except ScriptError as e:
            out = f"error: {e}"
        got.append(Case(c.pre, c.cmd, out, c.line))
    return cases, got, trailer


# ============================================================================ printing
def short(d: bytes) -> str:
    return "null" if d == NULL else d.hex()[:8]


def _seqs(items) -> str:
    return "[" + ",".join(str(x) for x in items) + "]"


def fmt_msg(m) -> str:
    t = type(m)
    if t is Request:
        return f"request c{m.client} ts={m.timestamp}"
    if t is Reply:
        try:
            status = STATUS_NAMES.get(decode_result(m.result)[0], "?")
        except Exception:
            status = "?"
        return f"reply c{m.client} ts={m.timestamp} h={m.height} i={m.index} {status} v={m.view}"
    if t is Redirect:
        return f"redirect c{m.client} ts={m.timestamp} leader=r{m.leader}"
    if t is PrePrepare:
        return f"pre-prepare v={m.view} n={m.seq} d={short(m.digest)} batch={len(m.batch)}"
    if t in (Prepare, Commit):
        return f"{m.NAME} v={m.view} n={m.seq} d={short(m.digest)}"
    if t is Checkpoint:
        return f"checkpoint n={m.seq} head={short(m.head)} size={m.tree_size}"
    if t is ViewChange:
        return (f"view-change v={m.new_view} h={m.stable_seq} C={len(m.checkpoints)} "
                f"P={_seqs(c.pre_prepare.seq for c in m.prepared)}")
    if t is NewView:
        o = ",".join(f"{p.seq}:{short(p.digest)}" for p in m.pre_prepares)
        return f"new-view v={m.view} V={_seqs(vc.replica for vc in m.view_changes)} O=[{o}]"
    if t is Suspect:
        return f"suspect v={m.view}"
    if t is StateRequest:
        return f"state-request {m.from_height}..{m.to_height}"
    if t is StateResponse:
        hs = []
        for raw in m.blocks:
            try:
                hs.append(str(Block.decode(raw).height))
            except Exception:
                hs.append("?")
        return f"state-response blocks=[{','.join(hs)}]"
    if t is BatchRequest:
        return f"batch-request d={short(m.digest)}"
    if t is BatchResponse:
        return f"batch-response d={short(m.digest)} batch={len(m.batch)}"
    if t is PxPrepare:
        return f"px-prepare b={m.ballot} from={m.from_slot}"
    if t is PxPromise:
        acc = ",".join(f"{a.slot}@{a.ballot}" for a in m.accepted)
        return f"px-promise b={m.ballot} ci={m.commit_index} accepted=[{acc}]"
    if t is PxAccept:
        return f"px-accept b={m.ballot} slot={m.slot} d={short(m.digest)} batch={len(m.batch)} ci={m.commit_index}"
    if t is PxAccepted:
        return f"px-accepted b={m.ballot} slot={m.slot}"
    if t is PxNack:
        return f"px-nack b={m.ballot} promised={m.promised}"
    if t is PxHeartbeat:
        return f"px-heartbeat b={m.ballot} ci={m.commit_index}"
    if t in (PxPreVote, PxPreVoteGrant):
        return f"{m.NAME} b={m.ballot}"
    return fmt_read_msg(m) or getattr(m, "NAME", t.__name__)


def fmt_block(b: Block) -> str:
    return f"h={b.height} n={b.sequence} v={b.view} txs={len(b.txs)} hash={short(b.hash())}"


def fmt_action(a) -> str:
    t = type(a)
    if t is Broadcast:
        return f"broadcast {fmt_msg(a.msg)}"
    if t is Send:
        return f"send r{a.to} {fmt_msg(a.msg)}"
    if t is ToClient:
        return f"to c{a.client} {fmt_msg(a.msg)}"
    if t is Persist:
        return "persist"
    if t is CompactVotes:
        return f"compact-votes records={len(a.records)}"
    if t is AppendBlock:
        return f"append-block {fmt_block(a.block)}"
    if t is ServeBlocks:
        return f"serve-blocks r{a.to} {a.from_height}..{a.to_height}"
    return t.__name__


def summarize(lines: list[str]) -> list[str]:
    """Actions counted by kind (`  r1: 4097 x broadcast px-accept`), in order of first
    appearance; drops and RAISED lines stay as they are, one per line."""
    counts: dict[str, int] = {}
    out: list[str] = []
    for line in lines:
        who, _, what = line.partition(": ")
        words = what.split()
        if not words or words[0] in ("drop", "RAISED"):
            out.append(line)
            continue
        n = {"broadcast": 2, "send": 3, "to": 3}.get(words[0], 1)
        key = f"{who}: {' '.join(words[:n])}"
        if key not in counts:
            out.append(key)
        counts[key] = counts.get(key, 0) + 1
    return [f"{ln.partition(': ')[0]}: {counts[ln]} x {ln.partition(': ')[2]}" if ln in counts else ln
            for ln in out]


def drop_counts(core) -> dict[str, tuple[int, dict]]:
    """{rule label: (total, by sender)}."""
    return {k: (v["total"], v.get("by_sender", {})) for k, v in core.drops.as_json().items()}


# ============================================================================ the cluster
@dataclass
class Node:
    core: object
    alive: bool = True
    votes: list[bytes] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)
    incarnation: int = 0


class Harness(ReadCommands):
    def __init__(self, protocol: str) -> None:
        if protocol not in ("pbft", "paxos"):
            raise ScriptError(f"unknown protocol {protocol!r} (the script's directory names it)")
        self.protocol = protocol
        self.nodes: list[Node] = []
        self.net: list[tuple[int, int, object]] = []        # (src, dst, message) in flight, FIFO
        self.groups: list[set[int]] | None = None
        self.muted: set[int] = set()                        # replicas whose sends are all lost
        self.now = 0.0
        self.ts: Counter[int] = Counter()                   # last timestamp used per client
        self.replies: dict[int, list[str]] = {}
        self.n = 0

    # ------------------------------------------------------------------ dispatch
    def run(self, line: str) -> str:
        try:
            words = shlex.split(line)
        except ValueError as e:
            raise ScriptError(str(e)) from None
        name, args = words[0], words[1:]
        pos = [a for a in args if "=" not in a]
        kw = dict(a.split("=", 1) for a in args if "=" in a)
        fn = getattr(self, "cmd_" + name.replace("-", "_"), None)
        if fn is None:
            raise ScriptError(f"unknown command {name!r}")
        if name != "cluster" and not self.nodes:
            raise ScriptError("no cluster yet: start with 'cluster'")
        out: list[str] = []
        fn(pos, kw, out)
        return "\n".join(out) if out else "ok"

    # ------------------------------------------------------------------ parsing helpers
    def replica(self, s: str) -> int:
        s = s.strip()
        v = s[1:] if s.startswith("r") else s
        if not v.isdigit():
            raise ScriptError(f"not a replica: {s!r}")
        return int(v)

    def replicas(self, s: str) -> list[int]:
        if s == "all":
            return list(range(self.n))
        return [self.replica(x) for x in s.split(",") if x]

    @staticmethod
    def client(s: str) -> int:
        v = s[1:] if s.startswith("c") else s
        if not v.isdigit():
            raise ScriptError(f"not a client: {s!r}")
        return int(v)

    @staticmethod
    def num(kw: dict, key: str, default):
        v = kw.get(key)
        if v is None:
            return default
        try:
            return type(default)(v) if default is not None else int(v)
        except ValueError:
            raise ScriptError(f"{key}={v!r} is not a number") from None

    # ------------------------------------------------------------------ keys and configs
    def _config(self):
        kw = self.cfg_kw
        if self.protocol == "pbft":
            c = dict(checkpoint_interval=2, log_size=4, batch_size=16, pipeline=4, request_timeout=1.0,
                     retransmit_interval=0.25)
        else:
            c = dict(heartbeat_interval=0.05, election_timeout=(0.3, 0.6), retransmit_interval=0.1,
                     transfer_timeout=0.2, checkpoint_interval=4, batch_size=4, pipeline=2)
        for k, v in kw.items():
            if k == "election_timeout":
                lo, hi = v.split(",")
                c[k] = (float(lo), float(hi))
            elif k in ("backoff", "prevote"):
                c[k] = v in ("on", "true", "1", "yes")
            elif k == "monitor":
                c[k] = MonitorConfig(enabled=v in ("on", "true", "1", "yes"))
            else:
                c[k] = float(v) if "." in v else int(v)
        try:
            if self.protocol == "pbft":
                return PbftConfig(n=self.n, f=self.f, **c)
            return PaxosConfig(n=self.n, f=self.f, **c)
        except (TypeError, ValueError) as e:
            raise ScriptError(f"bad configuration: {e}") from None

    def _make_core(self, i: int, chain: Chain, votes: list[bytes], incarnation: int):
        # as a replica runs: client keys are cluster.toml's, then the ledger's registrations
        keys = Keys(self.keys.replicas, ClientKeys(self.keys.clients, chain.registry), self.keys.verifier, admin=0)
        if self.protocol == "pbft":
            return PbftCore(self.cfg, i, self.rs[i], keys, chain, votes, self.now)
        return PaxosCore(self.cfg, i, self.rs[i], keys, chain, votes, self.now,
                         random.Random(f"script-{i}-{incarnation}"))

    # ------------------------------------------------------------------ the cluster
    def cmd_cluster(self, pos, kw, out) -> None:
        """cluster [n=4] [f=1] [clients=3] [config key=value ...]"""
        if self.nodes:
            raise ScriptError("the cluster exists already")
        self.n = self.num(kw, "n", 4 if self.protocol == "pbft" else 3)
        if not 1 <= self.n <= MAX_REPLICAS:
            raise ScriptError(f"n must be in 1..{MAX_REPLICAS}")
        default_f = (self.n - 1) // 3 if self.protocol == "pbft" else (self.n - 1) // 2
        self.f = self.num(kw, "f", default_f)
        nclients = self.num(kw, "clients", 3)
        self.cfg_kw = {k: v for k, v in kw.items() if k not in ("n", "f", "clients")}
        self.rs = [HashSigner(b"replica-%d" % i) for i in range(self.n)]
        self.cs = [HashSigner(b"client-%d" % i) for i in range(nclients)]
        self.keys = Keys([s.public_key for s in self.rs], [s.public_key for s in self.cs],
                         HashVerifier(self.rs + self.cs + [FORGER]))
        self.cfg = self._config()
        self.nodes = [Node(self._make_core(i, Chain(), [], 0)) for i in range(self.n)]
        out.append(f"{self.protocol} n={self.n} f={self.f} clients={nclients}")

    def _connected(self, a: int, b: int) -> bool:
        if self.groups is None:
            return True
        return any(a in g and b in g for g in self.groups)

    def _collect(self, i: int, out: list[str], indent: str = "") -> None:
        """Carry out replica i's ready() actions and print them."""
        node = self.nodes[i]
        for a in node.core.ready():
            t = type(a)
            if i in self.muted and t in (Broadcast, Send, ToClient, ServeBlocks):
                out.append(f"{indent}r{i}: {fmt_action(a)} (muted)")     # the network loses it
                continue
            out.append(f"{indent}r{i}: {fmt_action(a)}")
            if t is Broadcast:
                for d in range(self.n):
                    if d != i:
                        self.net.append((i, d, a.msg))
            elif t is Send:
                self.net.append((i, a.to, a.msg))
            elif t is ToClient:
                self.replies.setdefault(a.client, []).append(f"r{i}: {fmt_msg(a.msg)}")
            elif t is Persist:
                node.votes.append(a.record)
            elif t is CompactVotes:
                node.votes = list(a.records)
            elif t is AppendBlock:
                node.blocks.append(a.block)
            elif t is ServeBlocks:
                blocks = [b.encode() for b in node.blocks[a.from_height - 1: a.to_height]]
                self.net.append((i, a.to, StateResponse(i, blocks, [])))

    def _step(self, dst: int, sender: int, msg, from_client: bool, out: list[str], indent: str = "") -> None:
        core = self.nodes[dst].core
        before = drop_counts(core)
        try:
            core.step(sender, msg, from_client)
        except Exception as e:                   # a core must never raise on peer input: show it
            out.append(f"{indent}r{dst}: RAISED {type(e).__name__}: {e}")
            return
        after = drop_counts(core)
        for label, (total, _) in after.items():
            old = before.get(label, (0, {}))[0]
            for _ in range(total - old):
                out.append(f"{indent}r{dst}: drop {label}")
        self._collect(dst, out, indent)

    # ------------------------------------------------------------------ time and faults
    def cmd_tick(self, pos, kw, out) -> None:
        """tick [seconds] [r1,r2] [repeat=]: advance time (default 0.1 s) and tick the live replicas."""
        dt = float(pos[0]) if pos else 0.1
        who = self.replicas(pos[1]) if len(pos) > 1 else list(range(self.n))
        for _ in range(self.num(kw, "repeat", 1)):
            self._tick(dt, who, out)
        if not out:
            out.append(f"t={self.now:g}")

    def _tick(self, dt: float, who: list[int], out: list[str]) -> None:
        self.now = round(self.now + dt, 6)
        for i in who:
            node = self.nodes[i]
            if node.alive:
                before = drop_counts(node.core)
                node.core.tick(self.now)
                for label, (total, _) in drop_counts(node.core).items():
                    for _ in range(total - before.get(label, (0, {}))[0]):
                        out.append(f"r{i}: drop {label}")
                self._collect(i, out)

    def cmd_crash(self, pos, kw, out) -> None:
        for i in self.replicas(pos[0]):
            self.nodes[i].alive = False
        out.append("ok")

    def cmd_restart(self, pos, kw, out) -> None:
        """restart r1 [wipe]: a new core from its blocks and vote log (wipe: a replaced disk)."""
        for i in self.replicas(pos[0]):
            node = self.nodes[i]
            if "wipe" in pos:
                node.blocks, node.votes = [], []
            chain = Chain()
            for b in node.blocks:
                chain.replay(b)
            node.incarnation += 1
            node.core = self._make_core(i, chain, list(node.votes), node.incarnation)
            node.alive = True
            self._collect(i, out)
        if not out:
            out.append("ok")

    def cmd_partition(self, pos, kw, out) -> None:
        """partition 0,1,2 3: only replicas of one group hear each other."""
        self.groups = [set(self.replicas(g)) for g in pos]
        out.append("groups " + " ".join("{" + ",".join(f"r{r}" for r in sorted(g)) + "}" for g in self.groups))

    def cmd_heal(self, pos, kw, out) -> None:
        self.groups = None
        out.append("ok")

    def cmd_mute(self, pos, kw, out) -> None:
        """mute r0: a silent replica: it still hears, but everything it sends is lost."""
        if not pos:
            raise ScriptError("mute needs replicas")
        self.muted |= set(self.replicas(pos[0]))
        out.append("ok")

    def cmd_unmute(self, pos, kw, out) -> None:
        """unmute [r0]: the replicas listed (default all) speak again."""
        self.muted -= set(self.replicas(pos[0])) if pos else set(self.muted)
        out.append("ok")

    # ------------------------------------------------------------------ the network
    def _matches(self, env, kw) -> bool:
        src, dst, msg = env
        if "from" in kw and src not in self.replicas(kw["from"]):
            return False
        if "to" in kw and dst not in self.replicas(kw["to"]):
            return False
        if "type" in kw and msg.NAME not in kw["type"].split(","):
            return False
        return True

    def cmd_msgs(self, pos, kw, out) -> None:
        """msgs [from=] [to=] [type=]: the messages in flight."""
        for src, dst, msg in self.net:
            if self._matches((src, dst, msg), kw):
                out.append(f"r{src}->r{dst} {fmt_msg(msg)}")
        if not out:
            out.append("none")

    def cmd_lose(self, pos, kw, out) -> None:
        """lose [from=] [to=] [type=] [count=]: the network loses matching messages in flight."""
        count = self.num(kw, "count", 10**9)
        keep, lost = [], 0
        for env in self.net:
            if lost < count and self._matches(env, kw):
                lost += 1
            else:
                keep.append(env)
        self.net = keep
        out.append(f"lost {lost}")

    def _deliver(self, kw, out, quiet: bool) -> int:
        count = self.num(kw, "count", 10**9)
        batch = [e for e in self.net if self._matches(e, kw)][:count]
        chosen = {id(e) for e in batch}
        self.net = [e for e in self.net if id(e) not in chosen]
        delivered = 0
        for src, dst, msg in batch:
            if not self.nodes[dst].alive or not self._connected(src, dst):
                continue                                   # lost: crashed or partitioned away
            delivered += 1
            sink: list[str] = []
            self._step(dst, src, msg, False, sink, "  ")
            if not quiet:
                out.append(f"r{src}->r{dst} {fmt_msg(msg)}")
                out.extend(sink)
        return delivered

    def cmd_deliver(self, pos, kw, out) -> None:
        """deliver [from=] [to=] [type=] [count=] [quiet]: deliver matching messages in flight."""
        n = self._deliver(kw, out, "quiet" in pos)
        if "quiet" in pos or not n:
            out.append(f"delivered {n}")

    def cmd_stabilize(self, pos, kw, out) -> None:
        """stabilize [from=] [to=] [type=] [quiet] [max=]: deliver matching messages (all by
        default), the new ones they cause too, until none is in flight."""
        limit = self.num(kw, "max", 10_000)
        sel = {k: v for k, v in kw.items() if k in ("from", "to", "type")}
        total = 0
        while total < limit and any(self._matches(e, sel) for e in self.net):
            got = self._deliver(dict(sel, count=str(limit - total)), out, "quiet" in pos)
            total += got
        if "quiet" in pos or not total:
            out.append(f"delivered {total}")

    # ------------------------------------------------------------------ clients
    def request(self, client: int, ts: int, kw: dict, mods: set[str] = frozenset()) -> Request:
        if "op" in kw and kw["op"] == "get" or "get" in mods:
            op = op_get(kw.get("key", f"k{ts}"))
        elif kw.get("op") == "addclient" or "reg" in mods:
            # a registration (ledger.clients) of the Ed25519 key made from the word cert= (default "new")
            seed = hashlib.sha256(b"script client " + kw.get("cert", "new").encode()).digest()
            op = op_addclient(tls.make_certificate(seed, "script client"))
        else:
            size = self.num(kw, "size", 0)
            value = kw.get("value", f"v{ts}").encode()
            if size:
                value = (value * (size // max(len(value), 1) + 1))[:size]
            op = op_put(kw.get("key", f"k{ts}"), value)
        r = Request(client, ts, op)
        signer = self.cs[client] if client < len(self.cs) and "sig" not in mods else FORGER
        return r.signed(signer)

    def cmd_submit(self, pos, kw, out) -> None:
        """submit c0 to=1|all [ts=] [key=] [value=] [size=] [op=get|addclient] [cert=] [badsig] [as=c1] [repeat=]"""
        c = self.client(pos[0]) if pos else 0
        to = self.replicas(kw.get("to", str(primary(0, self.n) if self.protocol == "pbft" else 0)))
        for _ in range(self.num(kw, "repeat", 1)):
            if "ts" in kw:
                ts = int(kw["ts"])
            else:
                self.ts[c] += 1
                ts = self.ts[c]
            self.ts[c] = max(self.ts[c], ts)
            claimed = self.client(kw["as"]) if "as" in kw else c
            req = self.request(claimed, ts, kw, {"sig"} if "badsig" in pos else set())
            for i in to:
                if self.nodes[i].alive:
                    self._step(i, c, req, True, out)
        if not out:
            out.append("ok")

    def cmd_replies(self, pos, kw, out) -> None:
        """replies c0: what the replicas told client 0 so far."""
        c = self.client(pos[0]) if pos else 0
        out.extend(self.replies.get(c, []) or ["none"])

    # ------------------------------------------------------------------ inspection
    def cmd_status(self, pos, kw, out) -> None:
        """status [r1,r2]: the essentials of status()."""
        keys = ("view", "leader", "in_view_change", "executed", "stable_checkpoint", "pending")
        extra = ("suspecting",) if self.protocol == "pbft" else ("role", "promised", "commit_index")
        for i in self.replicas(pos[0]) if pos else range(self.n):
            node = self.nodes[i]
            if not node.alive:
                out.append(f"r{i}: crashed")
                continue
            st = node.core.status()
            fields = [f"{k}={str(st[k]).lower() if isinstance(st[k], bool) else st[k]}"
                      for k in keys + extra if k in st]
            out.append(f"r{i}: " + " ".join(fields) + f" head={st['head'][:8]}")

    def cmd_drops(self, pos, kw, out) -> None:
        """drops [r1,r2]: drop counters by rule (and by sender)."""
        for i in self.replicas(pos[0]) if pos else range(self.n):
            counts = drop_counts(self.nodes[i].core)
            if not counts:
                out.append(f"r{i}: none")
            for label, (total, by) in counts.items():
                who = " ".join(f"{k}={v}" for k, v in sorted(by.items()))
                out.append(f"r{i}: {label} {total}" + (f" ({who})" if who else ""))

    def cmd_blocks(self, pos, kw, out) -> None:
        """blocks [r1]: the blocks a replica appended (its ledger on 'disk')."""
        for i in self.replicas(pos[0]) if pos else range(self.n):
            bl = self.nodes[i].blocks
            out.extend(f"r{i}: {fmt_block(b)}" for b in bl)
            if not bl:
                out.append(f"r{i}: none")

    # ------------------------------------------------------------------ crafted messages
    def cmd_inject(self, pos, kw, out) -> None:
        """inject <type> from=r2|c0 to=r1|all [fields] [signer=] [badsig] [sender=] [dup] [repeat=] [quiet]"""
        if not pos:
            raise ScriptError("inject needs a message type")
        kind = pos[0]
        flags = set(pos[1:])
        src = kw.get("from", "r0")
        from_client = src.startswith("c")
        sender = self.client(src) if from_client else self.replica(src)
        to = [i for i in self.replicas(kw.get("to", "all")) if i != sender or from_client] \
            if kw.get("to", "all") == "all" else self.replicas(kw["to"])
        claimed = self.replica(kw["sender"]) if "sender" in kw else sender
        build = getattr(self, "msg_" + kind.replace("-", "_"), None)
        if build is None:
            raise ScriptError(f"unknown message type {kind!r}")
        times = self.num(kw, "repeat", 1) * (2 if "dup" in flags else 1)
        for dst in to:
            if not self.nodes[dst].alive:
                continue
            msg = build(claimed, dst, kw, flags)
            if getattr(msg, "SIGNED", False) and kind != "request":
                signer = FORGER if "badsig" in flags else \
                    self.rs[self.replica(kw["signer"])] if "signer" in kw else \
                    self.rs[claimed] if claimed < self.n else FORGER
                msg.signed(signer)
            for _ in range(times):
                out.append(f"{src}->r{dst} {fmt_msg(msg)}")
                sink: list[str] = []
                self._step(dst, sender, msg, from_client, sink, "  ")
                out.extend(summarize(sink) if "quiet" in flags else sink)

    # -- field helpers
    def _v(self, dst: int, kw: dict) -> int:
        return self.num(kw, "v", self.nodes[dst].core.view)

    def batch(self, spec: str) -> list[bytes]:
        """c0:1,c1:4!sig,garbage,prepare: canonical requests (client:timestamp) with modifiers."""
        out: list[bytes] = []
        for item in (x for x in spec.split(",") if x):
            name, _, mods = item.partition("!")
            mods_set = set(mods.split("+")) if mods else set()
            if name == "garbage":
                out.append(b"\xc1 not msgpack")
                continue
            if name == "prepare":
                out.append(Prepare(0, 1, NULL, 0).signed(self.rs[0]).encode())
                continue
            c, _, ts = name.partition(":")
            client, ts_i = self.client(c), int(ts or 1)
            if client >= len(self.cs):
                r = Request(client, ts_i, op_put(f"k{ts_i}", b"v%d" % ts_i)).signed(FORGER)
            else:
                r = self.request(client, ts_i, {}, mods_set)
            raw = r.encode()
            if "noncanon" in mods_set:              # the same fields under an 'array 16' header
                fields = r.to_list()
                raw = b"\xdc" + len(fields).to_bytes(2, "big") + b"".join(
                    msgpack.packb(x, use_bin_type=True) for x in fields)
            out.append(raw)
        return out

    def digest(self, dst: int, kw: dict, key: str = "d") -> bytes:
        spec = kw.get(key)
        if spec is None:
            if "batch" in kw:
                return root_of(self.batch(kw["batch"]))
            core = self.nodes[dst].core
            slot = getattr(core, "log", {}).get(self.num(kw, "n", 1)) if self.protocol == "pbft" else None
            if slot is not None and slot.pre_prepare is not None:
                return slot.pre_prepare.digest
            return NULL
        if spec == "null":
            return NULL
        if spec.startswith("block:"):
            h = int(spec[6:])
            for node in self.nodes:
                if len(node.blocks) >= h:
                    return node.blocks[h - 1].batch_root
            raise ScriptError(f"no replica has block {h}")
        return hashlib.sha256(spec.encode()).digest()

    def state_at(self, seq: int) -> tuple[bytes, int, bytes]:
        """(head, tree size, tree root) after block seq, from a replica that has it."""
        for node in self.nodes:
            if 1 <= seq <= len(node.blocks):
                b = node.blocks[seq - 1]
                return b.hash(), b.tree_size, b.tree_root
        fake = hashlib.sha256(b"state-%d" % seq).digest()
        return fake, seq, fake

    def checkpoint(self, seq: int, by: int, mods: set[str]) -> Checkpoint:
        head, size, root = self.state_at(seq)
        if "state" in mods:
            head = hashlib.sha256(b"another state").digest()
        if "seq" in mods:
            seq += self.cfg.checkpoint_interval
        signer = FORGER if "sig" in mods else self.rs[by]
        return Checkpoint(seq, head, size, root, by).signed(signer)

    def proof(self, h: int, spec: str | None) -> list[Checkpoint]:
        if h == 0 and spec is None:
            return []
        if spec is None:
            spec = ",".join(str(r) for r in range(2 * self.f + 1))
        out = []
        for item in (x for x in spec.split(",") if x):
            r, _, mods = item.partition("!")
            out.append(self.checkpoint(h, self.replica(r), set(mods.split("+")) if mods else set()))
        return out

    def prepared(self, spec: str | None, new_view: int) -> list[PreparedCert]:
        """P: seq[@view][!mod+mod]: mods batch, primary, mismatch, fromprimary, short, dup, sig."""
        certs = []
        for item in (x for x in (spec or "").split(",") if x):
            head, _, mods = item.partition("!")
            m = set(mods.split("+")) if mods else set()
            s, _, v = head.partition("@")
            seq, view = int(s), int(v) if v else max(new_view - 1, 0)
            d = hashlib.sha256(b"prepared-%d-%d" % (view, seq)).digest()
            p = primary(view, self.n)
            by = (p + 1) % self.n if "primary" in m else p
            batch = self.batch("c0:1") if "batch" in m else []
            if batch:
                d = root_of(batch)
            pp = PrePrepare(view, seq, d, batch, by).signed(self.rs[by])
            backups = [r for r in range(self.n) if r != p][: 2 * self.f]
            if "fromprimary" in m:
                backups[-1] = p
            if "dup" in m:
                backups[-1] = backups[0]
            if "short" in m:
                backups = backups[:-1]
            prepares = []
            for k, r in enumerate(backups):
                dd = hashlib.sha256(b"other").digest() if "mismatch" in m and k == len(backups) - 1 else d
                signer = FORGER if "sig" in m and k == len(backups) - 1 else self.rs[r]
                prepares.append(Prepare(view, seq, dd, r).signed(signer))
            certs.append(PreparedCert(pp, prepares))
        return certs

    def view_change(self, by: int, new_view: int, kw: dict, mods: set[str]) -> ViewChange:
        h = self.num(kw, "h", 0)
        vc = ViewChange(new_view, h, self.proof(h, kw.get("proof")), self.prepared(kw.get("P"), new_view), by)
        return vc.signed(FORGER if "sig" in mods else self.rs[by])

    # -- pbft messages (signed ones are signed by cmd_inject)
    def msg_pre_prepare(self, by, dst, kw, flags):
        batch = self.batch(kw.get("batch", "c0:1"))
        d = self.digest(dst, kw) if "d" in kw else root_of(batch)
        return PrePrepare(self._v(dst, kw), self.num(kw, "n", 1), d, batch, by)

    def msg_prepare(self, by, dst, kw, flags):
        return Prepare(self._v(dst, kw), self.num(kw, "n", 1), self.digest(dst, kw), by)

    def msg_commit(self, by, dst, kw, flags):
        return Commit(self._v(dst, kw), self.num(kw, "n", 1), self.digest(dst, kw), by)

    def msg_checkpoint(self, by, dst, kw, flags):
        seq = self.num(kw, "n", self.cfg.checkpoint_interval)
        head, size, root = self.state_at(seq)
        if "state" in kw:
            head = hashlib.sha256(kw["state"].encode()).digest()
        return Checkpoint(seq, head, size, root, by)

    def msg_suspect(self, by, dst, kw, flags):
        return Suspect(self._v(dst, kw), by)

    def msg_view_change(self, by, dst, kw, flags):
        h = self.num(kw, "h", 0)
        nv = self.num(kw, "v", self.nodes[dst].core.view + 1)
        return ViewChange(nv, h, self.proof(h, kw.get("proof")), self.prepared(kw.get("P"), nv), by)

    def msg_new_view(self, by, dst, kw, flags):
        """V=0,2,3@2,1!sig (senders; @view: a VIEW-CHANGE for another view; !sig: badly signed);
        P= (every VIEW-CHANGE's P) or P2= (replica 2's); O=auto|extra|empty|badsig."""
        v = self.num(kw, "v", self.nodes[dst].core.view + 1)
        vcs = []
        for item in kw.get("V", ",".join(str(r) for r in range(2 * self.f + 1))).split(","):
            head, _, mods = item.partition("!")
            r, _, vv = head.partition("@")
            rid = self.replica(r)
            own = dict(kw, P=kw.get(f"P{rid}", kw.get("P", "")))        # P2=...: replica 2's own P
            vcs.append(self.view_change(rid, int(vv) if vv else v, own, set(mods.split("+")) - {""}))
        try:
            plan = plan_new_view(vcs)
            entries = list(plan.entries)
        except Exception:
            entries = []
        o_mode = kw.get("O", "auto")
        if o_mode == "extra":
            entries.append((entries[-1][0] + 1 if entries else 1, NULL))
        elif o_mode == "empty":
            entries = []
        p = primary(v, self.n)
        osigner = FORGER if o_mode == "badsig" else self.rs[p]
        o = [PrePrepare(v, s, d, [], p).signed(osigner) for s, d in entries]
        return NewView(v, vcs, o, by)

    def msg_state_request(self, by, dst, kw, flags):
        return StateRequest(self.num(kw, "lo", 1), self.num(kw, "hi", 1), by)

    def msg_state_response(self, by, dst, kw, flags):
        """blocks=1..3[!header|!seq|!root|!cert] | garbage | none: the sender's stored blocks."""
        spec = kw.get("blocks", "none")
        if spec == "none":
            return StateResponse(by, [], [])
        if spec == "garbage":
            return StateResponse(by, [b"\x93not a block"], [])
        rng, _, mod = spec.partition("!")
        lo, _, hi = rng.partition("..")
        lo_i, hi_i = int(lo), int(hi or lo)
        src = self.nodes[by].blocks if by < self.n else []
        if len(src) < hi_i:
            src = max((n.blocks for n in self.nodes), key=len)
        if len(src) < hi_i:
            raise ScriptError(f"no replica holds blocks up to {hi_i}")
        raws = []
        for b in src[lo_i - 1: hi_i]:
            b = Block.decode(b.encode())
            if mod == "header":
                b.results_root = hashlib.sha256(b"forged results").digest()
            elif mod == "seq":
                b.sequence += 1
            elif mod == "root":
                b.batch_root = hashlib.sha256(b"forged root").digest()
            elif mod == "cert":
                b.cert = b.cert[:1] if self.protocol == "pbft" else []
            raws.append(b.encode())
        return StateResponse(by, raws, [])

    def msg_batch_request(self, by, dst, kw, flags):
        return BatchRequest(self.digest(dst, kw), by)

    def msg_batch_response(self, by, dst, kw, flags):
        batch = self.batch(kw.get("batch", "c0:1"))
        d = self.digest(dst, kw) if "d" in kw else root_of(batch)
        return BatchResponse(d, batch, by)

    def msg_request(self, by, dst, kw, flags):
        """A request relayed by a replica: client=c0 ts= (badsig: a forged client signature)."""
        c = self.client(kw.get("client", "c0"))
        return self.request(c, self.num(kw, "ts", 1), kw, {"sig"} if "badsig" in flags else set())

    def msg_reply(self, by, dst, kw, flags):
        return Reply(0, 0, 1, by, 1, 0, b"\x92\x00\xc0")

    # -- paxos messages
    def msg_px_prepare(self, by, dst, kw, flags):
        return PxPrepare(self.num(kw, "b", 0), self.num(kw, "from_slot", 0), by)

    def _px_accept(self, ballot: int, slot: int, kw: dict, flags) -> PxAccept:
        batch = self.batch(kw.get("batch", "c0:1"))
        d = hashlib.sha256(kw["d"].encode()).digest() if "d" in kw else root_of(batch)
        proposer = ballot % self.n
        if "foreign" in flags:                  # named and signed by a replica that does not lead the ballot
            proposer = (proposer + 1) % self.n
        acc = PxAccept(ballot, slot, d, batch, self.num(kw, "ci", 0), proposer)
        return acc.signed(FORGER if "badsig" in flags else self.rs[proposer])

    def msg_px_accept(self, by, dst, kw, flags):
        batch = self.batch(kw.get("batch", "c0:1"))
        d = hashlib.sha256(kw["d"].encode()).digest() if "d" in kw else root_of(batch)
        return PxAccept(self.num(kw, "b", 0), self.num(kw, "slot", 1), d, batch, self.num(kw, "ci", 0), by)

    def msg_px_promise(self, by, dst, kw, flags):
        """accepted=slot@ballot[!sig|!foreign],...  (each the ballot leader's signed ACCEPT of
        batch=; !sig: a forged signature; !foreign: named and signed by another replica)"""
        accepted = []
        for item in (x for x in kw.get("accepted", "").split(",") if x):
            head, _, mods = item.partition("!")
            s, _, b = head.partition("@")
            mods_set = set(mods.split("+")) if mods else set()
            if mods_set - {"sig", "foreign"}:
                raise ScriptError(f"unknown px-promise value modifier in {item!r}")
            flags_ = {"badsig"} if "sig" in mods_set else set()
            accepted.append(self._px_accept(int(b or 0), int(s), kw, flags_ | (mods_set & {"foreign"})))
        return PxPromise(self.num(kw, "b", 0), by, self.num(kw, "ci", 0), accepted)

    def msg_px_accepted(self, by, dst, kw, flags):
        return PxAccepted(self.num(kw, "b", 0), self.num(kw, "slot", 1), by)

    def msg_px_nack(self, by, dst, kw, flags):
        return PxNack(self.num(kw, "b", 0), self.num(kw, "promised", 0), by)

    def msg_px_heartbeat(self, by, dst, kw, flags):
        return PxHeartbeat(self.num(kw, "b", 0), self.num(kw, "ci", 0), by)

    def msg_px_prevote(self, by, dst, kw, flags):
        return PxPreVote(self.num(kw, "b", 0), by)

    def msg_px_prevote_grant(self, by, dst, kw, flags):
        return PxPreVoteGrant(self.num(kw, "b", 0), by)


def all_scripts(root: Path) -> list[Path]:
    return sorted(root.glob("*/*.txt"))

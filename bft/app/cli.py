"""The ``bftledger`` command (also ``python -m bft``).

One ``_add_<name>`` function builds each subcommand's parser and one ``cmd_<name>``
function runs it and returns the exit code; adding a subcommand means writing that
pair and listing the adder in ``SUBCOMMANDS``. Every error a user can cause becomes one
line on stderr, ``bftledger: error: <what is wrong and what to do>``, with exit code 2
for bad arguments and 1 otherwise; a traceback means a bug in bftledger.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Callable, NoReturn, Sequence

from crypto.keys import KeyFileError, fingerprint
from ledger.cluster import MODES, ClusterError, required_n
from ledger.store import StoreError

PROG = "bftledger"


class UsageError(Exception):
    """Arguments that parse but make no sense together (exit code 2, like argparse)."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the brief usage block confuses more than it helps)."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{PROG}: error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(2)


def _int_at_least(low: int) -> Callable[[str], int]:
    """An argparse type; argparse prefixes its message with the option's name."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, not {text!r}") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, not {v}")
        return v
    return parse


def _port(text: str) -> int:
    v = _int_at_least(1)(text)
    if v > 65535:
        raise argparse.ArgumentTypeError(f"must be a port number up to 65535, not {v}")
    return v


# ----------------------------------------------------------------------------- init
def _add_init(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "init", help="create a cluster directory: keys, cluster.toml, data/",
        description="Create a cluster in DIR: an Ed25519 key per replica and per client under "
                    "DIR/keys/ (mode 0600), the public configuration DIR/cluster.toml (safe to "
                    "share: audits and receipts need only it), and DIR/data/ for the ledgers. "
                    "pbft runs n = 3f+1 replicas and survives f that lie; paxos runs n = 2f+1 "
                    "and survives f that crash.")
    p.add_argument("dir", metavar="DIR", help="cluster directory (created if missing)")
    p.add_argument("--mode", required=True, choices=MODES, help="pbft (Byzantine faults) or paxos (crash faults)")
    p.add_argument("--f", required=True, type=_int_at_least(1), metavar="F",
                   help="number of faulty replicas to tolerate (at least 1)")
    p.add_argument("--clients", type=_int_at_least(1), default=4, metavar="N",
                   help="client keys to create (default: 4)")
    p.add_argument("--base-port", type=_port, default=None, metavar="P",
                   help="replica i listens on P+i (each port is checked to be free); default: "
                        "free ports below 32768, outside the kernel's ephemeral range")
    p.add_argument("--host", default="127.0.0.1", help="address the replicas listen on (default: 127.0.0.1)")
    p.add_argument("--force", action="store_true",
                   help="replace an existing cluster in DIR: new keys, and its old ledgers are deleted")
    p.add_argument("--insecure-plaintext", action="store_true",
                   help="INSECURE, for teaching and benchmarks only: links without TLS. Anyone on the path can "
                        "then read, drop and inject frames; the default is mutual TLS 1.3 with pinned keys")
    p.set_defaults(func=cmd_init)


def cmd_init(args: argparse.Namespace) -> int:
    from bft.app.clusterinit import MAX_F, ephemeral_range, init_cluster

    if args.f > MAX_F:
        raise UsageError(f"--f {args.f} is more than this tool supports ({MAX_F})")
    n = required_n(args.mode, args.f)
    if args.base_port is not None:
        eph = ephemeral_range()
        last = args.base_port + n - 1
        if eph and args.base_port <= eph[1] and last >= eph[0]:
            print(f"{PROG}: warning: ports {args.base_port}..{last} overlap the kernel's ephemeral range "
                  f"{eph[0]}..{eph[1]}; an outgoing connection may take one first", file=sys.stderr)
    c = init_cluster(args.dir, args.mode, args.f, clients=args.clients, base_port=args.base_port,
                     host=args.host, force=args.force, insecure_plaintext=args.insecure_plaintext)
    tolerance = "lie (Byzantine)" if c.mode == "pbft" else "crash"
    print(f"Created a {c.mode} cluster in {c.directory}")
    print(f"  {c.n} replicas (f={c.f}: up to {c.f} may {tolerance}), {len(c.clients)} client keys")
    print(f"  cluster id {c.cluster_id.hex()} (every signature and receipt names it)")
    if c.transport == "tls":
        print("  links: mutual TLS 1.3; each node's certificate is in certs/, its key pinned by cluster.toml")
    else:
        print("  links: INSECURE PLAINTEXT (--insecure-plaintext): anyone on the path can read, drop or inject "
              "frames; for teaching and benchmarks only")
    for r in c.replicas:
        print(f"  replica {r.id}  {r.host}:{r.port}  key {fingerprint(r.public_key)}")
    print(f"  public configuration: {c.directory / 'cluster.toml'} (share it with verifiers)")
    print(f"  private keys:         {c.directory / 'keys'} (mode 0600; keep them secret)")
    print(f"  ledgers:              {c.directory / 'data'}")
    print(f"Next: {PROG} up {c.directory}")
    return 0


# ----------------------------------------------------------------------------- audit
def _add_audit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "audit", help="check one replica's ledger offline with public keys only",
        description="Check DIR/data/replica-I/ without trusting the replica: every record's "
                    "checksum, every block's links and Merkle roots, re-execution of every "
                    "transaction, every client signature and every block's certificate, using "
                    "only the public keys in DIR/cluster.toml. Read-only: safe next to a running "
                    "replica. Exit status 0 when everything verifies, 1 on any fault (the first "
                    "bad height and why are printed).")
    p.add_argument("dir", metavar="DIR", help="cluster directory (made by 'bftledger init')")
    p.add_argument("--id", required=True, type=_int_at_least(0), metavar="I", help="replica id")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--expect-head", metavar="HASH",
                   help="a block hash (hex) the ledger must contain, e.g. a head seen earlier: catches a "
                        "ledger whose last blocks were cut off, which is otherwise still a valid chain")
    p.add_argument("--expect-height", type=_int_at_least(1), metavar="N", help="the ledger must reach height N")
    p.add_argument("--receipt", action="append", default=[], metavar="FILE",
                   help="a receipt (from 'put --json') whose block must be in the ledger and whose tree head "
                        "must be a prefix of the ledger's (RFC 9162 consistency); may be repeated")
    p.set_defaults(func=cmd_audit)


def cmd_audit(args: argparse.Namespace) -> int:
    from ledger.audit import audit

    from ledger.cluster import load
    from ledger.receipt import Receipt, ReceiptError

    expect_head = None
    if args.expect_head is not None:
        try:
            expect_head = bytes.fromhex(args.expect_head)
        except ValueError:
            raise UsageError(f"--expect-head {args.expect_head!r} is not a hex block hash") from None
        if len(expect_head) != 32:
            raise UsageError("--expect-head takes a 64-hex-digit block hash (see 'bftledger status')")
    receipts = []
    for path in args.receipt:
        try:
            r = Receipt.from_json(Path(path).read_text())
        except OSError as e:
            raise UsageError(f"cannot read receipt {path}: {e.strerror}") from None
        try:
            r.verify(load(args.dir))
        except ReceiptError as e:
            raise UsageError(f"receipt {path} does not verify for this cluster: {e}") from None
        receipts.append(r)
    report = audit(args.dir, args.id, expect_head=expect_head, expect_height=args.expect_height, receipts=receipts)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, sort_keys=True))
    else:
        print("\n".join(report.summary_lines()))
    return 0 if report.ok else 1


# ----------------------------------------------------------------------------- replica
def _strategies_help() -> str:
    from bft.adversary import STRATEGIES

    width = max(map(len, STRATEGIES))
    return "\n".join(f"  {name:<{width}}  {desc}" for name, desc in STRATEGIES.items())


def _add_replica(sub: argparse._SubParsersAction) -> None:
    from bft.adversary import STRATEGIES

    p = sub.add_parser(
        "replica", help="run one replica of a cluster in the foreground",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run replica I of the cluster in DIR: listen on its address from cluster.toml, "
                    "connect to the other replicas, keep its ledger in DIR/data/replica-I/. "
                    "Logs go to stderr. SIGTERM or Ctrl-C stops it cleanly; a restarted replica "
                    "recovers from its ledger and vote log and catches up from its peers.",
        epilog="Byzantine strategies (for experiments and courses; the replica lies on purpose):\n"
               + _strategies_help())
    p.add_argument("dir", metavar="DIR", help="cluster directory (made by 'bftledger init')")
    p.add_argument("--id", required=True, type=_int_at_least(0), metavar="I", help="replica id")
    p.add_argument("--byzantine", choices=list(STRATEGIES), metavar="STRATEGY", default=None,
                   help="misbehave with STRATEGY (listed below)")
    p.add_argument("--dormant", action="store_true",
                   help="with --byzantine: behave honestly until the process gets SIGUSR1 (kill -USR1 PID), "
                        "then misbehave; to watch a running cluster meet the attack (the benchmark does this)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info",
                   help="stderr log level (default: info)")
    p.set_defaults(func=cmd_replica)


def cmd_replica(args: argparse.Namespace) -> int:
    from ledger.cluster import load

    cluster = load(args.dir)
    if args.id >= cluster.n:
        raise ClusterError(f"replica {args.id} is not in this cluster (ids are 0..{cluster.n - 1})")
    if cluster.mode == "paxos":
        from bft.runtime.factory import paxos_classes

        paxos_classes()
    from bft.runtime.replica import run_replica

    logging.basicConfig(level=getattr(logging, args.log_level.upper()), force=True, stream=sys.stderr,
                        format=f"%(asctime)s replica-{args.id} %(levelname)s %(name)s: %(message)s")
    try:
        if args.dormant and not args.byzantine:
            raise UsageError("--dormant needs --byzantine STRATEGY (what to turn into on SIGUSR1)")
        return run_replica(cluster, args.id, byzantine=args.byzantine, dormant=args.dormant)
    except OSError as e:
        r = cluster.replicas[args.id]
        if e.filename is None:
            raise UsageError(f"replica {args.id} cannot listen on {r.host}:{r.port}: "
                             f"{(e.strerror or str(e)).lower()}; is it already running?") from None
        raise


# ----------------------------------------------------------------------------- up
def _add_up(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "up", help="run every replica of a cluster (child processes) until Ctrl-C",
        description="Start 'bftledger replica DIR --id I' for every replica of DIR as child "
                    "processes, report when they answer, and keep them running. Ctrl-C or "
                    "SIGTERM stops them all; no replica outlives this command.")
    p.add_argument("dir", metavar="DIR", help="cluster directory (made by 'bftledger init')")
    p.set_defaults(func=cmd_up)


def cmd_up(args: argparse.Namespace) -> int:
    from bft.runtime import procs
    from ledger.cluster import load

    cluster = load(args.dir)
    if cluster.mode == "paxos":
        from bft.runtime.factory import paxos_classes

        paxos_classes()
    return procs.run_up(cluster)


# ----------------------------------------------------------------------------- client commands
def _client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--client", type=_int_at_least(0), default=0, metavar="N",
                   help="use client key DIR/keys/client-N.key (default: 0)")
    p.add_argument("--timeout", type=float, default=15.0, metavar="S",
                   help="give up after S seconds without a commit (default: 15)")


def _run_async(fn, *args):
    import trio

    from bft.runtime.replica import unwrap

    try:
        return trio.run(fn, *args)
    except BaseExceptionGroup as eg:
        raise unwrap(eg) from None


def _add_put(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "put", help="commit KEY=VALUE and print its verified receipt",
        description="Commit a put of VALUE (UTF-8 text) under KEY through consensus, then fetch and "
                    "verify its receipt with the cluster's public keys. --json prints the receipt "
                    "itself, which 'bftledger verify-receipt' checks later.")
    p.add_argument("dir", metavar="DIR", help="cluster directory")
    p.add_argument("key", metavar="KEY")
    p.add_argument("value", metavar="VALUE")
    p.add_argument("--json", action="store_true", help="print the receipt as JSON")
    _client_args(p)
    p.set_defaults(func=cmd_put)


def cmd_put(args: argparse.Namespace) -> int:
    import ledger.client

    async def go():
        async with ledger.client.connect(args.dir, args.client, timeout=args.timeout) as c:
            return await c.put(args.key, args.value)

    r = _run_async(go)
    if args.json:
        print(r.to_json())
        return 0
    from ledger.cluster import load

    cluster = load(args.dir)
    v = r.verify(cluster)
    print(f"committed: {r.describe()} at height {r.height}, index {r.index} ({'view' if r.mode == 'pbft' else 'ballot'} {r.view})")
    print(f"  block {v.block_hash.hex()}")
    print(f"  certificate: {'COMMITs of replicas' if r.mode == 'pbft' else 'ACCEPT of leader'} "
          f"{', '.join(map(str, v.signers))}; block hash signed by replicas {', '.join(map(str, v.attesters))}; "
          f"receipt verified with public keys only")
    print(f"  trust: {v.trust_model}")
    return 0


def _add_get(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "get", help="read KEY (a linearizable read through consensus)",
        description="Read KEY's committed value; the read is ordered through consensus like a write. "
                    "Prints the value; exit status 1 when KEY is absent (with --json, 0 and "
                    "\"found\": false).")
    p.add_argument("dir", metavar="DIR", help="cluster directory")
    p.add_argument("key", metavar="KEY")
    p.add_argument("--json", action="store_true", help="print {key, found, value} as JSON")
    _client_args(p)
    p.set_defaults(func=cmd_get)


def cmd_get(args: argparse.Namespace) -> int:
    import ledger.client

    async def go():
        async with ledger.client.connect(args.dir, args.client, timeout=args.timeout) as c:
            return await c.get(args.key)

    value = _run_async(go)
    if args.json:
        doc = {"key": args.key, "found": value is not None, "value": None, "value_hex": None}
        if value is not None:
            doc["value_hex"] = value.hex()
            try:
                doc["value"] = value.decode()
            except UnicodeDecodeError:
                pass
        print(json.dumps(doc))
        return 0
    if value is None:
        sys.stderr.write(f"{PROG}: {args.key!r} is not set\n")
        return 1
    sys.stdout.buffer.write(value + b"\n")
    return 0


def _add_status(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "status", help="ask every replica for its view, leader, height and head",
        description="Ask each replica of DIR for its state: view (ballot), leader, last executed "
                    "sequence number, stable checkpoint, ledger height and head. --json prints one "
                    "object per replica; an unreachable one is {\"id\": I, \"reachable\": false}. "
                    "Exit status 1 when no replica answers.")
    p.add_argument("dir", metavar="DIR", help="cluster directory")
    p.add_argument("--json", action="store_true", help="print a JSON array")
    p.add_argument("--client", type=_int_at_least(0), default=0, metavar="N",
                   help="authenticate with client key N (default: 0)")
    p.add_argument("--timeout", type=float, default=2.0, metavar="S", help="per-replica timeout (default: 2)")
    p.set_defaults(func=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    from bft.runtime.client import query_status
    from ledger.client import _resolve

    cluster, cid, signer = _resolve(args.dir, args.client)
    st = _run_async(query_status, cluster, cid, signer, args.timeout)
    reachable = [s for s in st if s.get("reachable")]
    if args.json:
        keys = ("id", "reachable", "pid", "mode", "view", "leader", "executed", "stable_checkpoint", "height",
                "head")
        out = []
        for s in st:
            if not s.get("reachable"):
                out.append({"id": s["id"], "reachable": False})
            else:
                d = {k: s.get(k) for k in keys}
                d.update({k: v for k, v in s.items() if k not in d})
                out.append(d)
        from bft.runtime.procs import alerts

        for i, why in alerts(st, cluster.quorum).items():
            out[i]["alert"] = why
        print(json.dumps(out, indent=1, default=str))
    elif reachable:
        print(f"{cluster.mode} cluster {cluster.directory}: {len(reachable)} of {cluster.n} replicas reachable")
        from bft.runtime.procs import alerts

        warn = alerts(st, cluster.quorum)
        print(f"{'id':>3} {'pid':>7} {'view':>5} {'leader':>6} {'executed':>9} {'stable':>7} {'height':>7}  head")
        for s in st:
            if s.get("reachable"):
                flag = " (view change)" if s.get("in_view_change") else ""
                byz = f" [byzantine: {s['byzantine']}]" if s.get("byzantine") else ""
                print(f"{s['id']:>3} {s.get('pid', '?'):>7} {s.get('view', '?'):>5} {s.get('leader', '?'):>6} "
                      f"{s.get('executed', '?'):>9} {s.get('stable_checkpoint', '?'):>7} {s.get('height', '?'):>7}  "
                      f"{str(s.get('head', ''))[:16]}{flag}{byz}")
                if s["id"] in warn:
                    print(f"    ! replica {s['id']}: {warn[s['id']]}")
            else:
                print(f"{s['id']:>3} unreachable: {s.get('error')}")
    if not reachable:
        by_error: dict[str, list[str]] = {}
        for s, r in zip(st, cluster.replicas):
            by_error.setdefault(str(s.get("error")), []).append(f"{r.host}:{r.port}")
        errors = "; ".join(f"{err} at {', '.join(addrs)}" for err, addrs in sorted(by_error.items()))
        return _fail(f"no replica of {cluster.directory} answered ({errors}); "
                     f"start the cluster with '{PROG} up {cluster.directory}'", 1)
    return 0


def _add_verify_receipt(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify-receipt", help="check a receipt offline with the cluster's public keys",
        description="Check a receipt (as printed by 'bftledger put --json') with nothing but "
                    "DIR/cluster.toml: the client's signature, the transaction's and the result's "
                    "Merkle inclusion proofs, and the block's certificate. Exit status 0 when it "
                    "verifies, 1 when it does not (the reason is printed).")
    p.add_argument("file", metavar="FILE", help="receipt JSON file ('-' for stdin)")
    p.add_argument("--cluster", required=True, metavar="DIR", help="cluster directory (only cluster.toml is read)")
    p.set_defaults(func=cmd_verify_receipt)


def cmd_verify_receipt(args: argparse.Namespace) -> int:
    from ledger.cluster import load
    from ledger.receipt import Receipt, ReceiptError

    cluster = load(args.cluster)
    text = sys.stdin.read() if args.file == "-" else open(args.file, encoding="utf-8", errors="replace").read()
    try:
        r = Receipt.from_json(text)
    except ReceiptError as e:
        raise UsageError(f"{args.file}: {e}") from None
    try:
        v = r.verify(cluster)
    except ReceiptError as e:
        print(f"FAULT: the receipt does not verify: {e}")
        return 1
    print(f"OK: {r.describe()} by client {r.client} is in block {r.height} at index {r.index}; "
          f"outcome {r.status}")
    print(f"  block {v.block_hash.hex()}")
    print(f"  order certified by replicas {', '.join(map(str, v.signers))}, result (block hash) attested by "
          f"replicas {', '.join(map(str, v.attesters))} ({r.mode})")
    print(f"  trust: {v.trust_model}")
    return 0


# ----------------------------------------------------------------------------- demo
def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="see it work: real clusters, a crash, a liar, audits, a receipt (under a minute)",
        description="In a temporary directory with free ports: run a pbft cluster (4 replicas) and a "
                    "paxos cluster (3 replicas) as local processes, commit transactions, kill -9 the "
                    "pbft primary under load and watch the view change, restart it and watch it catch "
                    "up, run a cluster whose primary equivocates, kill the paxos leader, audit every "
                    "ledger and verify a receipt; then a short account of the numbers. Leaves no "
                    "process or file behind. --offline runs the single-process ledger demo instead "
                    "(no network: signatures, an audit and tampering being caught).")
    p.add_argument("--offline", action="store_true", help="the offline ledger and audit demo (a few seconds)")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    if args.offline:
        from bft.app import demo_offline

        return demo_offline.run()
    from bft.app import demo

    return demo.run(lambda line: print(line, flush=True))


# ----------------------------------------------------------------------------- wiring
EXAMPLES = f"""examples:
  {PROG} demo                                # see it work: real clusters in a temporary directory
  {PROG} demo --offline                      # the ledger, an audit and tampering, in one process
  {PROG} init ./mycluster --mode pbft --f 1  # 4 replicas, tolerates 1 Byzantine one
  {PROG} up ./mycluster                      # run them (Ctrl-C stops them)
  {PROG} put ./mycluster alice 100           # commit, print the verified receipt
  {PROG} get ./mycluster alice               # read through consensus
  {PROG} status ./mycluster                  # view, leader, height, head of each replica
  {PROG} audit ./mycluster --id 0            # verify replica 0's ledger offline
  {PROG} put ./mycluster bob 5 --json > r.json && {PROG} verify-receipt r.json --cluster ./mycluster

'{PROG} COMMAND --help' describes each command."""

SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_init, _add_up, _add_replica, _add_put, _add_get, _add_status, _add_audit, _add_verify_receipt, _add_demo]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="A Byzantine-fault-tolerant, append-only, verifiable ledger\n"
                    "(PBFT, or Multi-Paxos for crash faults only).",
        epilog=EXAMPLES)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def _fail(message: str, code: int) -> int:
    sys.stderr.write(f"{PROG}: error: {message}\n")
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; returns the exit code (never raises SystemExit or a user error)."""
    from bft.app.clusterinit import InitError
    from bft.runtime.factory import PaxosUnavailable
    from ledger.client import LedgerError
    from ledger.receipt import ReceiptError

    logging.basicConfig(level=logging.WARNING, format=f"{PROG}: warning: %(message)s")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        try:
            return int(args.func(args))
        except BaseExceptionGroup as eg:          # trio wraps what leaves a nursery; report the cause
            if eg.subgroup(KeyboardInterrupt) is not None:
                raise KeyboardInterrupt from None
            leaf = eg
            while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
                leaf = leaf.exceptions[0]
            raise leaf from None
    except SystemExit as e:                      # argparse: --help (0) or a usage error (2)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    except UsageError as e:
        return _fail(f"{e}", 2)
    except (ClusterError, KeyFileError, StoreError, InitError, LedgerError, ReceiptError) as e:
        return _fail(str(e), 1)
    except PaxosUnavailable as e:
        return _fail(f"{e}; use a pbft cluster ('{PROG} init DIR --mode pbft --f 1')", 1)
    except BrokenPipeError:                      # stdout closed early ('... | head'): not an error to report
        try:
            sys.stdout = open("/dev/null", "w")
        except OSError:
            pass
        return 1
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        return _fail(f"{where}{e.strerror or e}", 1)
    except KeyboardInterrupt:
        return 130

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
    p.set_defaults(func=cmd_init)


def cmd_init(args: argparse.Namespace) -> int:
    from bft.clusterinit import MAX_F, ephemeral_range, init_cluster

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
                     host=args.host, force=args.force)
    tolerance = "lie (Byzantine)" if c.mode == "pbft" else "crash"
    print(f"Created a {c.mode} cluster in {c.directory}")
    print(f"  {c.n} replicas (f={c.f}: up to {c.f} may {tolerance}), {len(c.clients)} client keys")
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
    p.set_defaults(func=cmd_audit)


def cmd_audit(args: argparse.Namespace) -> int:
    from ledger.audit import audit

    report = audit(args.dir, args.id)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, sort_keys=True))
    else:
        print("\n".join(report.summary_lines()))
    return 0 if report.ok else 1


# ----------------------------------------------------------------------------- demo
def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="show the ledger, an audit and tampering being caught (no arguments)",
        description="In a temporary directory: make a pbft cluster, commit a few blocks of signed "
                    "client requests, audit them, then tamper with copies of the ledger and show "
                    "the audit catching it. Takes no arguments; cleans up after itself.")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from bft import demo_offline

    return demo_offline.run()


# ----------------------------------------------------------------------------- wiring
EXAMPLES = f"""examples:
  {PROG} demo                                # see it work, in a temporary directory
  {PROG} init ./mycluster --mode pbft --f 1  # 4 replicas, tolerates 1 Byzantine one
  {PROG} audit ./mycluster --id 0            # verify replica 0's ledger offline

'{PROG} COMMAND --help' describes each command."""

SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_init, _add_audit, _add_demo]


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
    from bft.clusterinit import InitError

    logging.basicConfig(level=logging.WARNING, format=f"{PROG}: warning: %(message)s")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return int(args.func(args))
    except SystemExit as e:                      # argparse: --help (0) or a usage error (2)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    except UsageError as e:
        return _fail(f"{e}", 2)
    except (ClusterError, KeyFileError, StoreError, InitError) as e:
        return _fail(str(e), 1)
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        return _fail(f"{where}{e.strerror or e}", 1)
    except KeyboardInterrupt:
        return 130

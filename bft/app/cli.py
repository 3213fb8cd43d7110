"""The ``bftledger`` command (also ``python -m bft``): the parser and ``main``.

One ``add_<name>`` function builds each subcommand's parser and one ``cmd_<name>``
function runs it and returns the exit code (in ``cmd_cluster``: init, up, replica, demo;
in ``cmd_client``: put, get, delete, cas, status, audit, verify-receipt; in ``cmd_reads``:
verify-read; in ``cmd_export``: export, verify-export, watch; in ``cmd_lab``:
attacks, lab); adding a subcommand means writing that pair and listing the adder in
``SUBCOMMANDS``. Every error a user can cause
becomes one line on stderr, ``bftledger: error: <what is wrong and what to do>``, with exit
code 2 for bad arguments and 1 otherwise; a traceback means a bug in bftledger.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable, Sequence

from bft.app.args import PROG, Parser, Subparsers, UsageError, fail
from bft.app.cmd_admin import add_add_client
from bft.app.cmd_client import (add_audit, add_cas, add_delete, add_get, add_outcome, add_put, add_status, add_transact,
                                add_verify_receipt)
from bft.app.cmd_cluster import add_demo, add_init, add_replica, add_up
from bft.app.cmd_compare import add_compare
from bft.app.cmd_history import add_history, add_scan
from bft.app.cmd_export import add_export, add_verify_export, add_watch
from bft.app.cmd_lab import add_attacks, add_lab
from bft.app.cmd_reads import add_verify_read
from crypto.keys import KeyFileError
from ledger.cluster import ClusterError
from ledger.store import StoreError

EXAMPLES = f"""examples:
  {PROG} demo                                # see it work: real clusters in a temporary directory
  {PROG} demo --offline                      # the ledger, an audit and tampering, in one process
  {PROG} init ./mycluster --mode pbft --f 1  # 4 replicas, tolerates 1 Byzantine one
  {PROG} up ./mycluster                      # run them (Ctrl-C stops them)
  {PROG} put ./mycluster alice 100           # commit, print the verified receipt
  {PROG} get ./mycluster alice               # read (2f+1 matching answers; --linearizable orders it)
  {PROG} put ./mycluster photo --file a.jpg  # a value from a file ('-': from standard input), up to 64 KiB
  {PROG} cas ./mycluster alice 90 --expect 100   # compare-and-set; 'delete DIR KEY' removes a key
  {PROG} status ./mycluster                  # view, leader, height, head of each replica
  {PROG} audit ./mycluster --id 0            # verify replica 0's ledger offline
  {PROG} compare ./mycluster                 # do the replicas hold the same ledger? where not?
  {PROG} export ./mycluster --id 0 l.bfx && {PROG} verify-export l.bfx   # take the ledger away, check it
  {PROG} watch ./mycluster --from 1          # follow the ledger live, block by verified block
  {PROG} put ./mycluster bob 5 --json > r.json && {PROG} verify-receipt r.json --cluster ./mycluster
  {PROG} get ./mycluster bob --proof p.json && {PROG} verify-read p.json --cluster ./mycluster
  {PROG} transact ./mycluster --put a=90 --put b=60 --require a=100   # atomic, over several keys
  {PROG} history ./mycluster alice           # every version of a key, each with a verified receipt
  {PROG} scan ./mycluster acct-              # the keys beginning with acct-, in order (not verified)
  {PROG} attacks                             # what the lab can attack, and the rules that stop it
  {PROG} lab equivocate --mode paxos         # one attack in the simulator: what held, what broke

'{PROG} COMMAND --help' describes each command."""

SUBCOMMANDS: list[Callable[[Subparsers], None]] = [
    add_init, add_up, add_replica, add_put, add_get, add_delete, add_cas, add_transact, add_outcome, add_history,
    add_scan, add_add_client, add_status, add_audit, add_verify_receipt, add_verify_read, add_export,
    add_verify_export, add_watch, add_demo, add_compare, add_attacks, add_lab]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="A Byzantine-fault-tolerant, append-only, verifiable ledger\n"
                    "(PBFT, or Multi-Paxos for crash faults only).",
        epilog=EXAMPLES)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; returns the exit code (never raises SystemExit or a user error)."""
    try:
        from bft.app.clusterinit import InitError
        from bft.runtime.factory import PaxosUnavailable
        from ledger.client import LedgerError, Uncertain
        from ledger.readproof import ReadProofError
        from ledger.receipt import ReceiptError
    except KeyboardInterrupt:                    # Ctrl-C while the modules load
        return 130

    logging.basicConfig(level=logging.WARNING, format=f"{PROG}: warning: %(message)s")
    try:
        parser = build_parser()
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
        return fail(f"{e}", 2)
    except Uncertain as e:                        # sent, not confirmed: it may still commit (exit 3)
        return fail(str(e), 3)
    except (ClusterError, KeyFileError, StoreError, InitError, LedgerError, ReceiptError,
            ReadProofError) as e:
        return fail(str(e), 1)
    except PaxosUnavailable as e:
        return fail(f"{e}; use a pbft cluster ('{PROG} init DIR --mode pbft --f 1')", 1)
    except BrokenPipeError:                      # stdout closed early ('... | head'): not an error to report
        try:
            sys.stdout = open("/dev/null", "w")
        except OSError:
            pass
        return 1
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        return fail(f"{where}{e.strerror or e}", 1)
    except KeyboardInterrupt:
        return 130

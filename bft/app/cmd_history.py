"""``bftledger history`` and ``bftledger scan``: every version of a key, each with a verified
receipt, and the keys of a range in order (``ledger.historyclient`` says what each one
guarantees)."""
from __future__ import annotations

import argparse
import json
import sys

from bft.app.args import PROG, Subparsers, UsageError, height, int_at_least
from bft.app.cmd_client import _run_client, _show, check_key, client_args


def _run(args: argparse.Namespace, method: str, *call_args, **kw):
    """``_run_client``, with the arguments the client refuses (ValueError, TypeError) as usage errors."""
    import ledger.client

    try:
        return _run_client(args, method, *call_args, **kw)
    except (ValueError, TypeError) as e:           # TooLarge and bad arguments the client refused
        if isinstance(e, ledger.client.LedgerError) and not isinstance(e, ledger.client.TooLarge):
            raise
        raise UsageError(str(e)) from None


def add_history(sub: Subparsers) -> None:
    p = sub.add_parser(
        "history", help="every version of KEY, oldest first, each with a verified receipt",
        description="Print every version of KEY (a put, a compare-and-set that swapped, a delete that removed "
                    "it, a transaction that wrote it), oldest first, with the height and the writing "
                    "transaction. Each version is checked against its certified block and comes with a receipt "
                    "(--json prints them; 'bftledger verify-receipt' checks one). No replica can invent a "
                    "version; omitting one takes f+1 lying replicas in pbft. At most --limit versions above "
                    "height --after are printed; when more follow, the last line says which --after to use.")
    p.add_argument("dir", metavar="DIR", help="cluster directory")
    p.add_argument("key", metavar="KEY")
    p.add_argument("--limit", type=int_at_least(1), default=100, metavar="N",
                   help="at most N versions (1..1000, default 100)")
    p.add_argument("--after", type=height(0), default=None, metavar="H",
                   help="only versions written above height H (paging)")
    p.add_argument("--json", action="store_true",
                   help="print {key, versions: [{height, index, deleted, value, operation, receipt}], more}")
    client_args(p)
    p.set_defaults(func=cmd_history)


def cmd_history(args: argparse.Namespace) -> int:
    if args.limit > 1000:
        raise UsageError(f"--limit is at most 1000, not {args.limit}; page with --after")
    page = _run(args, "history", check_key(args.key), limit=args.limit, after=args.after)
    if args.json:
        print(json.dumps({"key": args.key, "versions": [v.to_dict() for v in page], "more": page.more,
                          "replicas": page.replicas}))
        return 0
    for v in page:
        what = "deleted" if v.deleted else _show(v.value)
        print(f"height {v.height:>6} #{v.index:<3} {what:<40} {v.receipt.describe()} by client {v.receipt.client}")
    tail = (f"more follow: {PROG} history {args.dir} {args.key} --after {page[-1].height}" if page.more and page
            else "end of history")
    print(f"{len(page)} version{'s' if len(page) != 1 else ''} of {args.key!r}, each checked against its certified "
          f"block (receipts with --json); {tail}")
    return 0


def add_scan(sub: Subparsers) -> None:
    p = sub.add_parser(
        "scan", help="the keys beginning with PREFIX and their values, in key order (--verified: proven)",
        description="Print the keys beginning with PREFIX (all keys without it), in key order, with their "
                    "values, in a replica's current state or, with --at-height, in the state after that "
                    "block. One replica answers: without --verified a lying one could answer anything; with "
                    "--verified every page comes with proofs checked against the state root of the certified "
                    "block at that height, attested by f+1 replicas, so none can add, drop or alter a pair "
                    "(see README, 'History and scans').")
    p.add_argument("dir", metavar="DIR", help="cluster directory")
    p.add_argument("prefix", metavar="PREFIX", nargs="?", default=None)
    p.add_argument("--start", metavar="KEY", default=None, help="from KEY (inclusive)")
    p.add_argument("--end", metavar="KEY", default=None, help="below KEY (exclusive)")
    p.add_argument("--at-height", type=height(), default=None, metavar="H",
                   help="the state after block H (replayed by the replica from the blocks)")
    p.add_argument("--limit", type=int_at_least(1), default=1000, metavar="N", help="at most N keys (default 1000)")
    p.add_argument("--verified", action="store_true",
                   help="check every page against the certified state root (probe proofs, 1-2 KiB a key)")
    p.add_argument("--json", action="store_true",
                   help="print {height, replica, verified, block_hash, pairs: [{key, value, value_hex}], more}")
    client_args(p)
    p.set_defaults(func=cmd_scan)


def cmd_scan(args: argparse.Namespace) -> int:
    for what, key in (("PREFIX", args.prefix), ("--start", args.start), ("--end", args.end)):
        if key is not None:
            check_key(key, what)
    got = _run(args, "scan", prefix=args.prefix, start=args.start, end=args.end, at_height=args.at_height,
               limit=args.limit, verified=args.verified)
    if args.json:
        pairs = []
        for k, v in got:
            try:
                text = v.decode()
            except UnicodeDecodeError:
                text = None
            pairs.append({"key": k, "value": text, "value_hex": v.hex()})
        print(json.dumps({"height": got.height, "replica": got.replica, "pairs": pairs, "more": got.more,
                          "verified": got.proof is not None,
                          "block_hash": got.proof.receipt.block_hash.hex() if got.proof else None}))
        return 0
    for k, v in got:
        print(f"{k}\t{_show(v)}")
    more = f"; more keys follow (--limit {args.limit})" if got.more else ""
    how = ("verified against the state root of the certified block, attested by replicas "
           f"{', '.join(str(r) for r, _ in got.proof.receipt.attestations)}" if got.proof else "not verified")
    sys.stderr.write(f"{len(got)} key{'s' if len(got) != 1 else ''} at height {got.height} from replica "
                     f"{got.replica} ({how}){more}\n")
    return 0

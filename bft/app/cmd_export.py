"""``bftledger export``, ``verify-export`` and ``watch`` (issue 16): a ledger taken away whole
and checked offline, and a ledger followed live, block by verified block."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from bft.app.args import PROG, Subparsers, UsageError, int_at_least


def add_export(sub: Subparsers) -> None:
    p = sub.add_parser(
        "export", help="write one replica's ledger to a portable, self-verifying archive",
        description="Write replica I's blocks with their certificates, and the cluster's public configuration "
                    "(cluster.toml), to FILE. The ledger is audited first (read-only, safe next to a running "
                    "replica), so only a ledger that verifies is exported. 'verify-export FILE' checks the "
                    "archive anywhere, with nothing else.",
        epilog=f"example: {PROG} export ./mycluster --id 0 ledger.bfx && {PROG} verify-export ledger.bfx")
    p.add_argument("dir", metavar="DIR", help="cluster directory (made by 'bftledger init')")
    p.add_argument("--id", required=True, type=int_at_least(0), metavar="I", help="replica id")
    p.add_argument("file", metavar="FILE", help="the archive to write (replaced atomically)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from ledger.export import export

    report = export(args.dir, args.id, args.file)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, sort_keys=True))
    else:
        print(f"exported replica {args.id}'s ledger to {args.file}: {report.height} blocks, "
              f"{report.tree_size} transactions, head {report.head}")
        for w in report.warnings:
            print(f"  warning: {w}")
    return 0


def add_verify_export(sub: Subparsers) -> None:
    p = sub.add_parser(
        "verify-export", help="check an exported ledger offline",
        description="Check an archive made by 'export' with nothing but what it holds: every record's "
                    "checksum, the cluster configuration's genesis, every block's hash link and Merkle roots, "
                    "re-execution of every transaction (results, tree head, state root), every client signature "
                    "and every block's certificate. A ledger with its last blocks cut off is still a valid "
                    "chain: --expect-head and --receipt catch that. Exit status 0 when everything verifies, "
                    "1 on any fault (where and what are printed).")
    p.add_argument("file", metavar="FILE", help="the archive")
    p.add_argument("--expect-head", metavar="HASH",
                   help="a block hash (hex) the archive must contain, e.g. a head seen earlier (detects rollback)")
    p.add_argument("--expect-height", type=int_at_least(1), metavar="N", help="the archive must reach height N")
    p.add_argument("--receipt", action="append", default=[], metavar="RECEIPT.json",
                   help="a receipt (from 'put --json') whose block must be in the archive; may be repeated")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_verify_export)


def parse_head(text: str | None) -> bytes | None:
    """--expect-head's 32-byte hash, or a UsageError."""
    if text is None:
        return None
    try:
        h = bytes.fromhex(text)
    except ValueError:
        raise UsageError(f"--expect-head {text!r} is not a hex block hash") from None
    if len(h) != 32:
        raise UsageError("--expect-head takes a 64-hex-digit block hash (see 'bftledger status')")
    return h


def cmd_verify_export(args: argparse.Namespace) -> int:
    from ledger.export import verify_export
    from ledger.receipt import Receipt, ReceiptError

    expect_head = parse_head(args.expect_head)
    receipts = []
    for path in args.receipt:
        try:
            receipts.append((path, Receipt.from_json(Path(path).read_text())))
        except OSError as e:
            raise UsageError(f"cannot read receipt {path}: {e.strerror}") from None
    if not Path(args.file).is_file():
        raise UsageError(f"{args.file} is not a file")
    # receipts are checked against the cluster inside the archive, so it is read first
    found = verify_export(args.file, expect_head=expect_head, expect_height=args.expect_height)
    report = found.report
    if report.ok and receipts:
        for path, r in receipts:
            try:
                r.verify(found.cluster)
            except ReceiptError as e:
                raise UsageError(f"receipt {path} does not verify for the archive's cluster: {e}") from None
        report = verify_export(args.file, expect_head=expect_head, expect_height=args.expect_height,
                               receipts=[r for _, r in receipts]).report
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, sort_keys=True))
    else:
        lines = report.summary_lines()
        if report.ok:
            lines[0] = (f"OK: the archive of replica {report.replica}'s ledger verifies ({report.height} blocks, "
                        f"{report.tree_size} transactions)")
        else:
            lines[0] = f"FAULT: {report.reason}"
        print("\n".join(line.replace("store:   ", "archive: ") for line in lines))
    return 0 if report.ok else 1

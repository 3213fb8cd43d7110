"""``bftledger export``, ``verify-export`` and ``watch`` (issue 16): a ledger taken away whole
and checked offline, and a ledger followed live, block by verified block."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from bft.app.args import PROG, Subparsers, UsageError, client_arg, height, int_at_least, parse_head, timeout_arg


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

    out = Path(args.file)
    if out.is_dir() or not out.parent.is_dir():
        raise UsageError(f"{args.file}: give a file in a directory that exists, to write the archive to")
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
    p.add_argument("--expect-height", type=height(), metavar="N", help="the archive must reach height N")
    p.add_argument("--receipt", action="append", default=[], metavar="RECEIPT.json",
                   help="a receipt (from 'put --json') whose block must be in the archive; may be repeated")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_verify_export)


def cmd_verify_export(args: argparse.Namespace) -> int:
    from bft.app.cmd_client import read_receipt
    from ledger.export import ExportCorrupt, archive_cluster, verify_export
    from ledger.receipt import ReceiptError

    expect_head = parse_head(args.expect_head)
    receipts = [(path, read_receipt(path)) for path in args.receipt]
    if not Path(args.file).is_file():
        raise UsageError(f"{args.file} is not a file")
    good = []
    if receipts:
        # receipts are checked against the cluster inside the archive (a damaged header is
        # reported by the full check below, with where)
        try:
            cluster = archive_cluster(args.file)
        except ExportCorrupt:
            cluster = None
        for path, r in receipts if cluster is not None else ():
            try:
                r.verify(cluster)
            except ReceiptError as e:
                raise UsageError(f"receipt {path} does not verify for the archive's cluster: {e}") from None
            good.append(r)
    report = verify_export(args.file, expect_head=expect_head, expect_height=args.expect_height,
                           receipts=good).report
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


def add_watch(sub: Subparsers) -> None:
    p = sub.add_parser(
        "watch", help="follow the ledger live: one line per block and per transaction",
        description="Print every committed block from height H on (default 1), and each of its transactions, "
                    "as they commit; each block is checked on arrival (its roots, its hash link to the block "
                    "before and its certificate, with cluster.toml's public keys), and none is skipped or "
                    "repeated, whichever replicas fail or restart meanwhile. Ctrl-C stops it.",
        epilog=f"example: {PROG} watch ./mycluster --from 1 --count 10")
    p.add_argument("dir", metavar="DIR", help="cluster directory")
    p.add_argument("--from", dest="from_height", type=height(), default=1, metavar="H",
                   help="the first height to print (default: 1)")
    p.add_argument("--count", type=int_at_least(1), metavar="N", help="stop after N blocks")
    client_arg(p)
    timeout_arg(p, 30.0, "give up when no replica has answered for S seconds")
    p.add_argument("--json", action="store_true", help="print one JSON object per block instead")
    p.set_defaults(func=cmd_watch)


def block_lines(block) -> list[str]:
    """One line for the block, then one per transaction: who, what, and how it ended."""
    from ledger import state
    from ledger import tx as txmod

    lines = [f"block {block.height}  view {block.view}  {len(block.txs)} txs  hash {block.hash().hex()[:16]}  "
             f"state {block.state_root.hex()[:16]}  certified by {len(block.cert)}"]
    for i, (raw, res) in enumerate(zip(block.txs, block.results)):
        t = txmod.parse(raw)
        what = "malformed transaction" if t is None else f"client {t.client}  {state.describe_op(t.op)}"
        try:
            status, value = state.decode_result(res)
            outcome = state.STATUS_NAMES.get(status, str(status))
            if value is not None and status == state.OK:
                shown = value[:40].decode(errors="replace")
                outcome += f" {shown!r}" + ("..." if len(value) > 40 else "")
        except Exception:
            outcome = "malformed result"
        lines.append(f"  {block.height}.{i}  {what}  -> {outcome}")
    return lines


def block_json(block) -> dict:
    from ledger import state
    from ledger import tx as txmod

    txs = []
    for raw, res in zip(block.txs, block.results):
        t = txmod.parse(raw)
        try:
            status, _ = state.decode_result(res)
        except Exception:
            status = None
        txs.append({"client": None if t is None else t.client, "timestamp": None if t is None else t.timestamp,
                    "op": "malformed" if t is None else state.describe_op(t.op),
                    "status": state.STATUS_NAMES.get(status, status)})
    return {"height": block.height, "view": block.view, "hash": block.hash().hex(),
            "prev_hash": block.prev_hash.hex(), "state_root": block.state_root.hex(), "tree_size": block.tree_size,
            "tree_root": block.tree_root.hex(), "signers": sorted(r for r, _ in block.cert), "txs": txs}


def cmd_watch(args: argparse.Namespace) -> int:
    import sys

    import ledger.client
    from bft.app.args import run_async

    async def watch() -> int:
        seen = 0
        async with ledger.client.connect(args.dir, args.client, timeout=args.timeout) as c:
            async for block in c.blocks(from_height=args.from_height):
                if args.json:
                    print(json.dumps(block_json(block), sort_keys=True))
                else:
                    print("\n".join(block_lines(block)))
                sys.stdout.flush()
                seen += 1
                if args.count is not None and seen >= args.count:
                    break
        return 0

    return run_async(watch)

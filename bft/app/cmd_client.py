"""``bftledger`` subcommands that talk to a running cluster (put, get, status) or check
its output offline (audit, verify-receipt)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bft.app.args import PROG, Subparsers, UsageError, add_query_args, fail, int_at_least, run_async
from ledger.quorum import protocol


# ----------------------------------------------------------------------------- put, get, status
def client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--client", type=int_at_least(0), default=0, metavar="N",
                   help="use client key DIR/keys/client-N.key (default: 0)")
    p.add_argument("--timeout", type=float, default=15.0, metavar="S",
                   help="give up after S seconds without a commit (default: 15)")


def add_put(sub: Subparsers) -> None:
    p = sub.add_parser(
        "put", help="commit KEY=VALUE and print its verified receipt",
        description="Commit a put of VALUE (UTF-8 text) under KEY through consensus, then fetch and "
                    "verify its receipt with the cluster's public keys. --json prints the receipt "
                    "itself, which 'bftledger verify-receipt' checks later.")
    p.add_argument("dir", metavar="DIR", help="cluster directory")
    p.add_argument("key", metavar="KEY")
    p.add_argument("value", metavar="VALUE")
    p.add_argument("--json", action="store_true", help="print the receipt as JSON")
    client_args(p)
    p.set_defaults(func=cmd_put)


def cmd_put(args: argparse.Namespace) -> int:
    import ledger.client

    async def go():
        async with ledger.client.connect(args.dir, args.client, timeout=args.timeout) as c:
            return await c.put(args.key, args.value)

    r = run_async(go)
    if args.json:
        print(r.to_json())
        return 0
    from ledger.cluster import load

    cluster = load(args.dir)
    v = r.verify(cluster)
    proto = protocol(r.mode)
    print(f"committed: {r.describe()} at height {r.height}, index {r.index} ({proto.round_word} {r.view})")
    print(f"  block {v.block_hash.hex()}")
    print(f"  certificate: {proto.certificate_word} "
          f"{', '.join(map(str, v.signers))}; block hash signed by replicas {', '.join(map(str, v.attesters))}; "
          f"receipt verified with public keys only")
    print(f"  trust: {v.trust_model}")
    return 0


def add_get(sub: Subparsers) -> None:
    p = sub.add_parser(
        "get", help="read KEY (not ordered: no block; --linearizable orders it)",
        description="Read KEY's committed value. By default the read is not ordered and adds no block: "
                    "pbft takes the value once 2f+1 replicas answer alike, paxos once the leader confirmed "
                    "it still leads (see README, 'Reads'); it falls back to an ordered read when the answers "
                    "differ. --linearizable orders the read through consensus like a write (a block). "
                    "Prints the value; exit status 1 when KEY is absent (with --json, 0 and "
                    "\"found\": false).")
    p.add_argument("dir", metavar="DIR", help="cluster directory")
    p.add_argument("key", metavar="KEY")
    p.add_argument("--linearizable", action="store_true",
                   help="order the read through consensus (linearizable whatever f replicas do; adds a block)")
    p.add_argument("--json", action="store_true", help="print {key, found, value} as JSON")
    client_args(p)
    p.set_defaults(func=cmd_get)


def cmd_get(args: argparse.Namespace) -> int:
    import ledger.client

    async def go():
        async with ledger.client.connect(args.dir, args.client, timeout=args.timeout) as c:
            return await c.get(args.key, linearizable=args.linearizable)

    value = run_async(go)
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


def add_status(sub: Subparsers) -> None:
    p = sub.add_parser(
        "status", help="ask every replica for its view, leader, height and head",
        description="Ask each replica of DIR for its state: view (ballot), leader, last executed "
                    "sequence number, stable checkpoint, ledger height and head. --json prints one "
                    "object per replica; an unreachable one is {\"id\": I, \"reachable\": false}. "
                    "Exit status 1 when no replica answers.")
    add_query_args(p, 2.0, "a JSON array")
    p.set_defaults(func=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    from ledger.client import _resolve
    from ledger.net.session import query_status

    cluster, cid, signer = _resolve(args.dir, args.client)
    st = run_async(query_status, cluster, cid, signer, args.timeout)
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
        by_height: dict = {}
        for s in reachable:
            by_height.setdefault(s.get("height"), {}).setdefault(s.get("head"), []).append(s["id"])
        for h, heads in sorted(by_height.items(), key=lambda kv: str(kv[0])):
            if len(heads) > 1:
                groups = " vs ".join(",".join(map(str, ids)) for ids in heads.values())
                print(f"! replicas {groups} hold different ledgers at height {h}: "
                      f"'{PROG} compare {cluster.directory}' finds where they first differ")
    if not reachable:
        by_error: dict[str, list[str]] = {}
        for s, r in zip(st, cluster.replicas):
            by_error.setdefault(str(s.get("error")), []).append(f"{r.host}:{r.port}")
        errors = "; ".join(f"{err} at {', '.join(addrs)}" for err, addrs in sorted(by_error.items()))
        return fail(f"no replica of {cluster.directory} answered ({errors}); "
                     f"start the cluster with '{PROG} up {cluster.directory}'", 1)
    return 0


def add_verify_receipt(sub: Subparsers) -> None:
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


# ----------------------------------------------------------------------------- audit
def add_audit(sub: Subparsers) -> None:
    p = sub.add_parser(
        "audit", help="check one replica's ledger offline with public keys only",
        description="Check DIR/data/replica-I/ without trusting the replica: every record's "
                    "checksum, every block's links and Merkle roots, re-execution of every "
                    "transaction, every client signature and every block's certificate, using "
                    "only the public keys in DIR/cluster.toml. Read-only: safe next to a running "
                    "replica. Exit status 0 when everything verifies, 1 on any fault (the first "
                    "bad height and why are printed).")
    p.add_argument("dir", metavar="DIR", help="cluster directory (made by 'bftledger init')")
    p.add_argument("--id", required=True, type=int_at_least(0), metavar="I", help="replica id")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--expect-head", metavar="HASH",
                   help="a block hash (hex) the ledger must contain, e.g. a head seen earlier: catches a "
                        "ledger whose last blocks were cut off, which is otherwise still a valid chain")
    p.add_argument("--expect-height", type=int_at_least(1), metavar="N", help="the ledger must reach height N")
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

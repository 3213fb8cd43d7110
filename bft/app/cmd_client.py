"""``bftledger`` subcommands that talk to a running cluster (put, get, delete, cas, status) or
check its output offline (audit, verify-receipt)."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from bft.app.args import (PROG, Subparsers, UsageError, add_query_args, client_arg, fail, height, int_at_least,
                          parse_head, read_text, run_async, timeout_arg)
from ledger.quorum import protocol


# ----------------------------------------------------------------------------- put, get, delete, cas, status
MAX_OP = 64 * 1024            # ledger.wire.MAX_OP and ledger.state.MAX_KEY, here so that --help needs no import
MAX_KEY = 1024                # (tests/integration/test_client_api.py checks that they agree)
LIMITS = (f"Limits: KEY is at most {MAX_KEY:,} bytes of UTF-8, and one operation at most {MAX_OP:,} bytes "
          f"(64 KiB) encoded, which KEY and VALUE totalling {MAX_OP - 11:,} bytes always fit; anything larger "
          f"is refused before it is sent.")
VALUE_SOURCES = ("VALUE is taken as given (UTF-8 text), '-' reads it from standard input and --file PATH "
                 "from a file, both byte for byte (a trailing newline included).")


def client_args(p: argparse.ArgumentParser) -> None:
    client_arg(p)
    timeout_arg(p, 15.0, "give up after S seconds without a commit; within a second when every replica refuses "
                         "the connection")


def value_args(p: argparse.ArgumentParser, name: str) -> None:
    p.add_argument("value", metavar=name, nargs="?", help="the value; '-' for standard input")
    p.add_argument("--file", metavar="PATH", help=f"read {name} from PATH instead")


def check_key(key: str, what: str = "KEY") -> str:
    """A key from the command line, checked against the ledger's limit before anything is sent."""
    from ledger.client import TooLarge, _check_key

    try:
        key.encode()
    except UnicodeEncodeError:
        raise UsageError(f"{what} is not valid UTF-8") from None
    try:
        return _check_key(key)
    except TooLarge as e:
        raise UsageError(str(e)) from None


def _key(args: argparse.Namespace) -> str:
    return check_key(args.key)


def _value(args: argparse.Namespace, name: str) -> bytes:
    """The value from the command line, standard input ('-') or --file; a source holding more
    than an operation can is refused after reading at most MAX_OP + 1 bytes of it."""
    if args.file is not None:
        if args.value is not None:
            raise UsageError(f"give {name} or --file PATH, not both")
        try:
            with open(args.file, "rb") as fh:
                data = fh.read(MAX_OP + 1)
                size = os.fstat(fh.fileno()).st_size
        except OSError as e:
            raise UsageError(f"cannot read --file {args.file}: {e.strerror}") from None
        where = f"--file {args.file}"
    elif args.value is None:
        raise UsageError(f"give {name}, '-' to read it from standard input, or --file PATH")
    elif args.value == "-":
        data = sys.stdin.buffer.read(MAX_OP + 1)
        size, where = 0, "standard input"           # its size is not known: it is not read to the end
    else:
        return os.fsencode(args.value)           # bytes as given, even when they are not UTF-8
    if len(data) > MAX_OP:
        more = f"is {size:,} bytes" if size > MAX_OP else f"holds more than {MAX_OP:,} bytes"
        raise UsageError(f"{name} from {where} {more}, over the ledger's limit of {MAX_OP:,} bytes (64 KiB) "
                         "per operation")
    return data


def _check(op: bytes) -> None:
    from ledger.client import TooLarge, check_operation

    try:
        check_operation(op)
    except TooLarge as e:
        raise UsageError(str(e)) from None


UNCERTAIN_HELP = ("Exit status 3 when the request was sent but not confirmed in time: it may still commit. "
                  "The signed request is then kept in DIR/pending/ and its id printed; "
                  f"'{PROG} outcome DIR ID' tells what became of it (it never writes twice).")


def pending_path(cluster_dir: str, rid: str) -> Path:
    return Path(cluster_dir) / "pending" / f"{rid}.req"


def _run_client(args: argparse.Namespace, method: str, *call_args, **call_kw):
    """One call of ``ledger.client.Client`` on a fresh connection. A write that raises
    ``Uncertain`` leaves its signed request in DIR/pending/ for ``bftledger outcome``."""
    import ledger.client

    async def go():
        async with ledger.client.connect(args.dir, args.client, timeout=args.timeout) as c:
            return await getattr(c, method)(*call_args, **call_kw)

    try:
        return run_async(go)
    except ledger.client.Uncertain as e:
        path = pending_path(args.dir, e.request_id)
        try:
            path.parent.mkdir(exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(e.request)
            os.replace(tmp, path)
            advice = f"'{PROG} outcome {args.dir} {e.request_id}' tells what became of it (kept in {path})"
        except OSError as err:
            advice = f"it could not be kept in {path} ({err.strerror})"
        raise ledger.client.Uncertain(e.reason, ledger.client.decode(e.request), advice) from None


def _show(v: bytes | None) -> str:
    if v is None:
        return "(absent)"
    text = repr(v)
    return text if len(text) <= 60 else f"{text[:48]}... ({len(v):,} bytes)"


def operation_lines(op: dict | None) -> list[str]:
    """What a receipt proves was asked, one line per part (verify-receipt and the writes)."""
    if op is None:
        return ["  operation: malformed"]
    kind = op["kind"]
    if kind == "put":
        return [f"  operation: put {op['key']!r} = {_show(op['value'])}"]
    if kind == "cas":
        return [f"  operation: cas {op['key']!r}: {_show(op['expected'])} -> {_show(op['value'])}"]
    if kind != "transact":
        return [f"  operation: {kind} {op['key']!r}"]
    return (["  operation: transact"] + [f"    put {k!r} = {_show(v)}" for k, v in op["puts"].items()]
            + [f"    delete {k!r}" for k in op["deletes"]]
            + [f"    require {k!r} = {_show(v)}" for k, v in op["require"].items()])


def _holds(v: bytes | None) -> str:
    return "is not set" if v is None else f"holds {v!r}"


def _committed(args: argparse.Namespace, r, *why: str) -> int:
    """Print receipt ``r``; when its operation failed (not with --json), print ``why`` and exit 1."""
    _print_receipt(args, r)
    if r.ok or args.json:
        return 0
    for line in why:
        sys.stderr.write(f"{PROG}: {line}\n")
    return 1


def _print_receipt(args: argparse.Namespace, r) -> None:
    if args.json:
        print(r.to_json())
        return
    from ledger.cluster import load

    cluster = load(args.dir)
    v = r.verify(cluster)
    proto = protocol(r.mode)
    outcome = "" if r.ok else f"; outcome {r.status}"       # a delete of nothing, a cas that did not swap
    print(f"committed: {r.describe()} at height {r.height}, index {r.index} ({proto.round_word} {r.view}){outcome}")
    print("\n".join(operation_lines(r.operation)))
    print(f"  block {v.block_hash.hex()}")
    print(f"  certificate: {proto.certificate_word} "
          f"{', '.join(map(str, v.signers))}; block hash signed by replicas {', '.join(map(str, v.attesters))}; "
          f"receipt verified with public keys only")
    print(f"  trust: {v.trust_model}")


def add_put(sub: Subparsers) -> None:
    p = sub.add_parser(
        "put", help="commit KEY=VALUE and print its verified receipt",
        description="Commit a put of VALUE under KEY through consensus, then fetch and verify its receipt "
                    "with the cluster's public keys. --json prints the receipt itself, which "
                    f"'bftledger verify-receipt' checks later. {VALUE_SOURCES} {UNCERTAIN_HELP} {LIMITS}")
    p.add_argument("dir", metavar="DIR", help="cluster directory")
    p.add_argument("key", metavar="KEY")
    value_args(p, "VALUE")
    p.add_argument("--json", action="store_true", help="print the receipt as JSON")
    client_args(p)
    p.set_defaults(func=cmd_put)


def cmd_put(args: argparse.Namespace) -> int:
    from ledger import state

    key, value = _key(args), _value(args, "VALUE")
    _check(state.op_put(key, value))
    _print_receipt(args, _run_client(args, "put", key, value))
    return 0


def add_get(sub: Subparsers) -> None:
    p = sub.add_parser(
        "get", help="read KEY (not ordered: no block; --linearizable orders it)",
        description="Read KEY's committed value. By default the read is not ordered and adds no block: "
                    "pbft takes the value once 2f+1 replicas answer alike, paxos once the leader confirmed "
                    "it still leads (see README, 'Reads'); it falls back to an ordered read when the answers "
                    "differ. --linearizable orders the read through consensus like a write (a block). "
                    "Prints the value; exit status 1 when KEY is absent (with --json, 0 and "
                    f"\"found\": false). {LIMITS}")
    p.add_argument("dir", metavar="DIR", help="cluster directory")
    p.add_argument("key", metavar="KEY")
    p.add_argument("--linearizable", action="store_true",
                   help="order the read through consensus (linearizable whatever f replicas do; adds a block)")
    p.add_argument("--proof", metavar="FILE",
                   help="a verified read: write its proof (JSON) to FILE, checkable offline with "
                        f"'{PROG} verify-read FILE --cluster DIR'")
    p.add_argument("--at-height", type=height(), metavar="H",
                   help="a verified read of the state after block H (replicas rebuild it, within a bound; "
                        "see README, 'Verified reads')")
    p.add_argument("--json", action="store_true", help="print {key, found, value} as JSON")
    client_args(p)
    p.set_defaults(func=cmd_get)


def cmd_get(args: argparse.Namespace) -> int:
    if args.proof is not None or args.at_height is not None:
        from bft.app.cmd_reads import get_verified

        return get_verified(args)
    return print_value(args, _run_client(args, "get", _key(args), args.linearizable))


def print_value(args: argparse.Namespace, value: bytes | None, height: int | None = None) -> int:
    """What 'get' prints: the value's bytes, or with --json one object; exit status 1 when the
    key is not set (with --json, 0: "found" says so). ``height``: the state a verified read is of."""
    if args.json:
        doc = {"key": args.key, "found": value is not None, **({"height": height} if height is not None else {}),
               "value": None, "value_hex": None if value is None else value.hex()}
        if value is not None:
            try:
                doc["value"] = value.decode()
            except UnicodeDecodeError:
                pass
        print(json.dumps(doc))
        return 0
    if value is None:
        at = "" if height is None else f" at height {height} (proven absent)"
        sys.stderr.write(f"{PROG}: {args.key!r} is not set{at}\n")
        return 1
    sys.stdout.buffer.write(value + b"\n")
    return 0


def add_delete(sub: Subparsers) -> None:
    p = sub.add_parser(
        "delete", help="commit the removal of KEY and print its verified receipt",
        description="Commit a delete of KEY through consensus and print its verified receipt (as 'put' "
                    "does). Exit status 1 when KEY was absent (with --json, 0: the receipt's "
                    f"status says \"failed\"). {UNCERTAIN_HELP} {LIMITS}")
    p.add_argument("dir", metavar="DIR", help="cluster directory")
    p.add_argument("key", metavar="KEY")
    p.add_argument("--json", action="store_true", help="print the receipt as JSON")
    client_args(p)
    p.set_defaults(func=cmd_delete)


def cmd_delete(args: argparse.Namespace) -> int:
    return _committed(args, _run_client(args, "delete", _key(args)), f"{args.key!r} was not set")


def add_cas(sub: Subparsers) -> None:
    p = sub.add_parser(
        "cas", help="compare-and-set: set KEY to NEW if it holds OLD (or is absent)",
        description="Commit a compare-and-set through consensus: KEY becomes NEW if its value is "
                    "--expect OLD (UTF-8 text), or with --absent if KEY is not set; prints the verified "
                    "receipt. Exit status 1 when it did not swap, and the current value is printed "
                    "(with --json, 0: the receipt's status says \"failed\" and its value is the current "
                    f"one). {VALUE_SOURCES.replace('VALUE', 'NEW')} {UNCERTAIN_HELP} {LIMITS.replace('VALUE', 'OLD and NEW')}")
    p.add_argument("dir", metavar="DIR", help="cluster directory")
    p.add_argument("key", metavar="KEY")
    value_args(p, "NEW")
    expect = p.add_mutually_exclusive_group(required=True)
    expect.add_argument("--expect", metavar="OLD", help="swap only if KEY holds OLD")
    expect.add_argument("--absent", action="store_true", help="swap only if KEY is not set")
    p.add_argument("--json", action="store_true", help="print the receipt as JSON")
    client_args(p)
    p.set_defaults(func=cmd_cas)


def cmd_cas(args: argparse.Namespace) -> int:
    from ledger import state

    key, new = _key(args), _value(args, "NEW")
    expected = None if args.absent else os.fsencode(args.expect)
    _check(state.op_cas(key, expected, new))
    r = _run_client(args, "cas", key, expected, new)
    return _committed(args, r, f"not swapped: {args.key!r} {_holds(r.value)}")


def _assignments(items: list[str], flag: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq:
            raise UsageError(f"{flag} takes KEY=VALUE, got {item!r}")
        if key in out:
            raise UsageError(f"{flag} names {key!r} twice")
        out[key] = os.fsencode(value)
    return out


def add_transact(sub: Subparsers) -> None:
    p = sub.add_parser(
        "transact", help="commit puts and deletes over several keys atomically, if requirements hold",
        description="Commit one atomic transaction: every --put and --delete applies if every --require "
                    "(KEY holds VALUE) and --require-absent (KEY is not set) holds when it executes, else "
                    "none does. One transaction in the ledger, one verified receipt. Exit status 1 when a "
                    "requirement failed (the unmet ones are printed with their current values; with --json, "
                    f"0: the receipt says so). Values are UTF-8 text as given. {UNCERTAIN_HELP} {LIMITS}",
        epilog=f"example: {PROG} transact DIR --put alice=90 --put bob=60 --require alice=100 --require bob=50")
    p.add_argument("dir", metavar="DIR", help="cluster directory")
    p.add_argument("--put", action="append", default=[], metavar="KEY=VALUE", help="set KEY to VALUE")
    p.add_argument("--delete", action="append", default=[], metavar="KEY", help="remove KEY")
    p.add_argument("--require", action="append", default=[], metavar="KEY=VALUE",
                   help="apply only if KEY holds VALUE")
    p.add_argument("--require-absent", action="append", default=[], metavar="KEY",
                   help="apply only if KEY is not set")
    p.add_argument("--json", action="store_true", help="print the receipt as JSON")
    client_args(p)
    p.set_defaults(func=cmd_transact)


def cmd_transact(args: argparse.Namespace) -> int:
    from ledger import state

    puts = _assignments(args.put, "--put")
    require: dict[str, bytes | None] = dict(_assignments(args.require, "--require"))
    for k in args.require_absent:
        if k in require:
            raise UsageError(f"{k!r} is both --require'd and --require-absent")
        require[k] = None
    for k in [*puts, *args.delete, *require]:
        check_key(k, f"key {k!r}")
    why = state.txn_error(puts, args.delete, require)
    if why is not None:
        raise UsageError(why)
    _check(state.op_txn(puts, args.delete, require))
    r = _run_client(args, "transact", puts, args.delete, require)
    return _committed(args, r, *(f"not applied: {k!r} {_holds(v)}" for k, v in r.failed.items()))


def add_outcome(sub: Subparsers) -> None:
    p = sub.add_parser(
        "outcome", help="what became of a write that timed out: its receipt, committed then or now",
        description="Send again the very request a put, cas, delete or transact left in DIR/pending/ when "
                    "it was not confirmed in time, and print its verified receipt: the ledger executes a "
                    "request once, so this tells whether it committed (and where) or makes it commit now, "
                    "never twice. The kept request is removed once its receipt is in hand. Exit status 3 "
                    "if it is still not confirmed, 1 if the replicas refuse it or no longer remember it.")
    p.add_argument("dir", metavar="DIR", help="cluster directory")
    p.add_argument("request_id", metavar="REQUEST_ID", help="the id the timed-out command printed (CLIENT-TIMESTAMP)")
    p.add_argument("--json", action="store_true", help="print the receipt as JSON")
    timeout_arg(p, 15.0, "give up after S seconds without an answer")
    p.set_defaults(func=cmd_outcome)


def cmd_outcome(args: argparse.Namespace) -> int:
    client, dash, ts = args.request_id.partition("-")
    if not (dash and client.isascii() and client.isdigit() and ts.isascii() and ts.isdigit()):
        raise UsageError(f"REQUEST_ID is CLIENT-TIMESTAMP (like 0-1764662400000001), not {args.request_id!r}")
    path = pending_path(args.dir, args.request_id)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"no kept request {args.request_id} in {path.parent}: only a write that timed out on "
                         "this machine keeps one") from None
    from ledger.wire import DecodeError, Request, decode

    try:
        req = decode(raw)
    except DecodeError as e:
        req = e
    if not isinstance(req, Request) or req.client != int(client):
        return fail(f"{path} is not the signed request {args.request_id} (damaged?): remove it", 1)
    args.client = req.client
    r = _run_client(args, "outcome", raw)
    _print_receipt(args, r)
    path.unlink(missing_ok=True)
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
    from ledger.net.session import no_replica_reachable, query_status

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
        return fail(no_replica_reachable(cluster, [str(s.get("error")) for s in st]), 1)
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


def read_receipt(path: str):
    """The receipt in FILE ('-': standard input); a UsageError when there is none."""
    from ledger.receipt import Receipt, ReceiptError

    try:
        return Receipt.from_json(read_text(path, "receipt"))
    except ReceiptError as e:
        raise UsageError(f"receipt {path}: {e}") from None


def check_offline(args: argparse.Namespace, from_json, error: type[Exception], what: str):
    """What verify-receipt and verify-read share: load --cluster, read and parse FILE ('-':
    standard input; ``error`` from ``from_json`` is a usage error), verify it with the
    cluster's public keys. (cluster, document, verification), or None once FAULT is printed."""
    from ledger.cluster import load

    cluster = load(args.cluster)
    text = read_text(args.file)
    try:
        doc = from_json(text)
    except error as e:
        raise UsageError(f"{args.file}: {e}") from None
    try:
        return cluster, doc, doc.verify(cluster)
    except error as e:
        print(f"FAULT: the {what} does not verify: {e}")
        return None


def cmd_verify_receipt(args: argparse.Namespace) -> int:
    from ledger.receipt import Receipt, ReceiptError

    checked = check_offline(args, Receipt.from_json, ReceiptError, "receipt")
    if checked is None:
        return 1
    _, r, v = checked
    print(f"OK: {r.describe()} by client {r.client} is in block {r.height} at index {r.index}; "
          f"outcome {r.status}")
    print("\n".join(operation_lines(r.operation)))
    if r.failed:
        print("  unmet: " + ", ".join(f"{k!r} {_show(v)}" for k, v in r.failed.items()))
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
    p.add_argument("--expect-height", type=height(), metavar="N", help="the ledger must reach height N")
    p.add_argument("--receipt", action="append", default=[], metavar="FILE",
                   help="a receipt (from 'put --json') whose block must be in the ledger and whose tree head "
                        "must be a prefix of the ledger's (RFC 9162 consistency); may be repeated")
    p.set_defaults(func=cmd_audit)


def cmd_audit(args: argparse.Namespace) -> int:
    from ledger.audit import audit

    from ledger.cluster import load
    from ledger.receipt import ReceiptError

    expect_head = parse_head(args.expect_head)
    receipts = []
    for path in args.receipt:
        r = read_receipt(path)
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

"""Verified reads on the command line (issue 16): ``get DIR KEY --proof FILE [--at-height H]``
writes a ``ledger.readproof.ReadProof`` and prints the value; ``verify-read FILE --cluster DIR``
checks one offline. Apart from ``cmd_client`` (long enough) because both speak ReadProof."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from bft.app.args import Subparsers, UsageError


def get_verified(args: argparse.Namespace) -> int:
    """``get`` with --proof or --at-height: a verified read; the proof goes to --proof FILE."""
    if args.linearizable:
        raise UsageError("--proof/--at-height make a verified read, which is not ordered; drop --linearizable")
    from bft.app.cmd_client import _run_client, check_key, print_value

    key = check_key(args.key)
    out: Path | None = Path(args.proof) if args.proof else None
    if out is not None and out.is_dir():
        raise UsageError(f"--proof {args.proof} is a directory; give a file to write the read proof to")
    if out is not None and not out.parent.is_dir():
        raise UsageError(f"--proof {args.proof}: no directory {out.parent} to write the read proof in")
    proof = _run_client(args, "get_verified", key, args.at_height)
    if out is not None:
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(proof.to_json() + "\n")
        os.replace(tmp, out)
    return print_value(args, proof.value, proof.height)


def add_verify_read(sub: Subparsers) -> None:
    p = sub.add_parser(
        "verify-read", help="check a read proof offline with the cluster's public keys",
        description="Check a read proof (written by 'bftledger get DIR KEY --proof FILE') with nothing but "
                    "DIR/cluster.toml: the block's certificate over its batch root, f+1 replicas' attestations "
                    "of the block hash (one in paxos: crash-fault trust), and the state proof from the key to "
                    "the header's state root. Prints the key, its value or absence, the height and who "
                    "attested. Exit status 0 when it verifies, 1 when it does not (the reason is printed).")
    p.add_argument("file", metavar="FILE", help="read proof JSON file ('-' for stdin)")
    p.add_argument("--cluster", required=True, metavar="DIR", help="cluster directory (only cluster.toml is read)")
    p.add_argument("--json", action="store_true", help="print what verified as JSON")
    p.set_defaults(func=cmd_verify_read)


def cmd_verify_read(args: argparse.Namespace) -> int:
    from bft.app.cmd_client import check_offline
    from ledger.readproof import ReadProof, ReadProofError

    checked = check_offline(args, ReadProof.from_json, ReadProofError, "read proof")
    if checked is None:
        return 1
    cluster, _, v = checked
    if args.json:
        print(json.dumps({"ok": True, "key": v.key, "found": v.value is not None,
                          "value_hex": None if v.value is None else v.value.hex(), "height": v.height,
                          "block_hash": v.block_hash.hex(), "certified_by": v.signers, "attested_by": v.attesters,
                          "trust_model": v.trust_model}))
        return 0
    what = "absent" if v.value is None else _show(v.value)
    print(f"OK: key {v.key!r} is {what} at height {v.height}")
    print(f"  block {v.block_hash.hex()}")
    print(f"  order certified by replicas {', '.join(map(str, v.signers))}; header (state root) attested by "
          f"replicas {', '.join(map(str, v.attesters))} ({cluster.mode})")
    print(f"  trust: {v.trust_model}")
    return 0


def _show(v: bytes) -> str:
    try:
        text = v.decode()
        return repr(text) if len(text) <= 200 else f"{text[:160]!r}... ({len(v):,} bytes)"
    except UnicodeDecodeError:
        return f"0x{v.hex()}" if len(v) <= 64 else f"0x{v[:48].hex()}... ({len(v):,} bytes)"

"""``bftledger add-client``: onboard an application's key on a running ledger.

The new key is registered by a transaction of the administrator (cluster.toml's ``admin``),
executed like any other, so every replica learns it at the same height and keeps it across
restarts and state transfer (``ledger.clients``). Nothing restarts, nothing is wiped.
"""
from __future__ import annotations

import argparse
import os

from bft.app.args import PROG, Subparsers, UsageError, timeout_arg


def add_add_client(sub: Subparsers) -> None:
    p = sub.add_parser(
        "add-client", help="register a new client key on the running ledger (administrator only)",
        description="Make a new client key, register it on the running ledger with the administrator's key "
                    "(cluster.toml's admin; 'init' names it) and keep it in DIR/keys/client-N.key with its "
                    "certificate and the receipt of its registration in DIR/certs/ (client-N.pem, "
                    "client-N.registration.json: its receipts carry the latter, so they verify offline with "
                    "cluster.toml alone). The registration is a transaction: every replica "
                    "learns the key at the same height, with no restart, and a receipt proves it. Then use "
                    "--client N (or client=N in ledger.client) from wherever DIR's keys/ and certs/ files for "
                    "N are copied.",
        epilog=f"example: {PROG} add-client ./mycluster && {PROG} put ./mycluster k v --client 4")
    p.add_argument("dir", metavar="DIR", help="cluster directory (holding the administrator's key)")
    timeout_arg(p, 15.0, "give up after S seconds without a commit")
    p.add_argument("--json", action="store_true", help="print {client, height, receipt} as JSON")
    p.set_defaults(func=cmd_add_client)


def cmd_add_client(args: argparse.Namespace) -> int:
    import json

    import ledger.client
    from bft.app.args import run_async
    from crypto import keys, tls
    from ledger.cluster import load

    cluster = load(args.dir)
    if cluster.admin is None:
        raise UsageError(f"{args.dir}/cluster.toml names no administrator (admin = ID): this cluster was made "
                         "before clients could be added; add 'admin = 0' to it to make client 0 the administrator")
    if not cluster.key_path("client", cluster.admin).exists():
        raise UsageError(f"the administrator's key {cluster.key_path('client', cluster.admin)} is not here: run "
                         "add-client where it is")
    signer = keys.generate()
    cert = tls.make_certificate(signer.seed, "bftledger client (registered)")
    staged = cluster.directory / "keys" / f"registering-{os.getpid()}.key"
    keys.save(signer, staged)        # before the registration: a key the ledger knows is never lost

    async def register():
        async with ledger.client.connect(args.dir, cluster.admin, timeout=args.timeout) as c:
            return await c.register_client(cert)

    try:
        cid, receipt = run_async(register)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    os.replace(staged, cluster.key_path("client", cid))
    cluster.cert_path("client", cid).write_bytes(cert)
    ledger.client.registration_path(cluster, cid).write_text(receipt.to_json())
    if args.json:
        print(json.dumps({"client": cid, "height": receipt.height, "receipt": receipt.to_dict()}, indent=2))
    else:
        print(f"registered client {cid} at height {receipt.height} (block {receipt.block_hash.hex()[:16]}); "
              f"its key: {cluster.key_path('client', cid)}")
        print(f"  use it with --client {cid}, or ledger.client.connect({str(args.dir)!r}, client={cid})")
    return 0


"""``bftledger`` subcommands that make and run clusters: init, replica, up, demo."""
from __future__ import annotations

import argparse
import logging
import sys

from bft.app.args import PROG, Subparsers, UsageError, id_list, int_at_least, port
from crypto.keys import fingerprint
from ledger.cluster import MODES, ClusterError, required_n
from ledger.quorum import PAXOS


# ----------------------------------------------------------------------------- init
def add_init(sub: Subparsers) -> None:
    p = sub.add_parser(
        "init", help="create a cluster directory: keys, cluster.toml, data/",
        description="Create a cluster in DIR: an Ed25519 key per replica and per client under "
                    "DIR/keys/ (mode 0600), the public configuration DIR/cluster.toml (safe to "
                    "share: audits and receipts need only it), and DIR/data/ for the ledgers. "
                    "pbft runs n = 3f+1 replicas and survives f that lie; paxos runs n = 2f+1 "
                    "and survives f that crash.")
    p.add_argument("dir", metavar="DIR", help="cluster directory (created if missing)")
    p.add_argument("--mode", required=True, choices=MODES, help="pbft (Byzantine faults) or paxos (crash faults)")
    p.add_argument("--f", required=True, type=int_at_least(1), metavar="F",
                   help="number of faulty replicas to tolerate (at least 1)")
    p.add_argument("--clients", type=int_at_least(1), default=4, metavar="N",
                   help="client keys to create (default: 4)")
    p.add_argument("--base-port", type=port, default=None, metavar="P",
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
    tolerance = c.protocol.fault_word
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
    if c.admin is not None:
        print(f"  administrator: client {c.admin} ({c.key_path('client', c.admin)}): only it registers new clients "
              f"on the running ledger ('{PROG} add-client {c.directory}')")
    print(f"  public configuration: {c.directory / 'cluster.toml'} (share it with verifiers)")
    print(f"  private keys:         {c.directory / 'keys'} (mode 0600; keep them secret)")
    print(f"  ledgers:              {c.directory / 'data'}")
    print(f"Next: {PROG} up {c.directory}")
    return 0


# ----------------------------------------------------------------------------- replica
def _require_core(cluster) -> None:
    """Fail before starting anything (PaxosUnavailable) when this build lacks the cluster's core."""
    if cluster.protocol is PAXOS:
        from bft.runtime.factory import paxos_classes

        paxos_classes()


def _strategies_help() -> str:
    from bft.adversary import STRATEGIES, TEAM_HELP, TEAM_STRATEGY

    listed = {**STRATEGIES, TEAM_STRATEGY: TEAM_HELP}
    width = max(map(len, listed))
    return "\n".join(f"  {name:<{width}}  {desc}" for name, desc in listed.items())


def add_replica(sub: Subparsers) -> None:
    from bft.adversary import STRATEGIES, TEAM_STRATEGY

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
    p.add_argument("--id", required=True, type=int_at_least(0), metavar="I", help="replica id")
    p.add_argument("--byzantine", choices=[*STRATEGIES, TEAM_STRATEGY], metavar="STRATEGY", default=None,
                   help="misbehave with STRATEGY (listed below)")
    p.add_argument("--group", type=id_list, metavar="I,J,...", default=None,
                   help=f"with --byzantine {TEAM_STRATEGY}: the ids of every replica in the team, this one "
                        "included; the first must be the primary of view 0 (replica 0)")
    p.add_argument("--trace-log", metavar="FILE", default=None,
                   help="append one JSON line per message received (with the rule that dropped it), sent, and "
                        "per view entered; 'bftledger lab --real --trace' merges these into a chart (costs a "
                        "hash per message; off by default)")
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
    _require_core(cluster)
    from bft.adversary import STRATEGIES, TEAM_STRATEGY, applies
    from bft.runtime.process import run_replica

    logging.basicConfig(level=getattr(logging, args.log_level.upper()), force=True, stream=sys.stderr,
                        format=f"%(asctime)s replica-{args.id} %(levelname)s %(name)s: %(message)s")
    try:
        if args.dormant and not args.byzantine:
            raise UsageError("--dormant needs --byzantine STRATEGY (what to turn into on SIGUSR1)")
        if (args.group is not None) != (args.byzantine == TEAM_STRATEGY):
            raise UsageError(f"--group goes with --byzantine {TEAM_STRATEGY}, and {TEAM_STRATEGY} needs --group")
        if args.group is not None:
            if cluster.mode != "pbft":
                raise UsageError(f"--byzantine {TEAM_STRATEGY} splits pbft backups; this is a {cluster.mode} cluster")
            if args.id not in args.group or 0 not in args.group or max(args.group) >= cluster.n:
                raise UsageError(f"--group must list replica 0 (the first primary) and this replica ({args.id}), "
                                 f"with ids below {cluster.n}")
        elif args.byzantine and not applies(args.byzantine, cluster.mode):
            raise UsageError(f"--byzantine {args.byzantine} does nothing to a {cluster.mode} replica (it acts on "
                             f"messages {cluster.mode} does not have); {cluster.mode} strategies: "
                             + ", ".join(s for s in STRATEGIES if applies(s, cluster.mode)))
        return run_replica(cluster, args.id, byzantine=args.byzantine, dormant=args.dormant, group=args.group,
                           trace_log=args.trace_log)
    except OSError as e:
        r = cluster.replicas[args.id]
        if e.filename is None:
            raise UsageError(f"replica {args.id} cannot listen on {r.host}:{r.port}: "
                             f"{(e.strerror or str(e)).lower()}; is it already running?") from None
        raise


# ----------------------------------------------------------------------------- up
def add_up(sub: Subparsers) -> None:
    p = sub.add_parser(
        "up", help="run every replica of a cluster (child processes) until Ctrl-C",
        description="Start 'bftledger replica DIR --id I' for every replica of DIR as child "
                    "processes (their PIDs are printed at once, their logs pass through to "
                    "stderr) and keep them running in the foreground. It says 'all N replicas are "
                    "up' once each of them answered a status query. If a replica cannot start "
                    "(e.g. it already runs: another 'up' on DIR), it prints that replica's reason, "
                    "stops the others and exits with status 1. Ctrl-C stops them all, at any "
                    "moment, and exits with status 130; SIGTERM (kill PID) or SIGHUP does the "
                    "same and exits with status 0. No replica outlives this command, even when "
                    "it is killed with kill -9 (the replicas then get SIGTERM).")
    p.add_argument("dir", metavar="DIR", help="cluster directory (made by 'bftledger init')")
    p.set_defaults(func=cmd_up)


def cmd_up(args: argparse.Namespace) -> int:
    from bft.runtime import procs
    from ledger.cluster import load

    cluster = load(args.dir)
    _require_core(cluster)
    return procs.run_up(cluster)


# ----------------------------------------------------------------------------- demo
def add_demo(sub: Subparsers) -> None:
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

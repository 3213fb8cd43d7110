"""``bftledger attacks`` (the catalogue) and ``bftledger lab`` (run one attack in the simulator)."""
from __future__ import annotations

import argparse
import json
import logging
import textwrap
from pathlib import Path

from typing import TYPE_CHECKING

from bft.app.args import PROG, Subparsers, UsageError, int_at_least
from bft.switches import SWITCHES

if TYPE_CHECKING:
    from bft.sim.lab import LabResult
    from bft.sim.trace import TraceRecorder

# The simulator and the cores load only when a lab command runs: every other command starts faster.

LAB_EXAMPLES = f"""examples:
  {PROG} attacks                          # the catalogue: what each attack does, what stops it
  {PROG} lab equivocate                   # a primary that equivocates, in pbft: safety holds
  {PROG} lab equivocate --mode paxos      # the same leader in paxos: the ledgers diverge
  {PROG} lab censor --seed 7 --json       # one object: safety, liveness, drops_by_rule, ...
  {PROG} lab collude --byzantine-count 2  # f+1 colluding replicas at n=4: safety breaks
  {PROG} lab split-brain --mode paxos --unsafe-disable paxos-majority   # the war story
  {PROG} lab collude --byzantine-count 2 --real --trace c.html   # on real processes, with a chart"""


def add_attacks(sub: Subparsers) -> None:
    p = sub.add_parser("attacks", help="list the attacks the lab can run, the rules that stop them",
                       description="The attack catalogue: for each attack, what the attacker does, the rules "
                                   "that stop it in each mode (names from docs/rules.md), what a run shows, and "
                                   "the command that runs it.")
    p.add_argument("--json", action="store_true", help="print the catalogue as one JSON list")
    p.set_defaults(func=cmd_attacks)


def add_lab(sub: Subparsers) -> None:
    p = sub.add_parser("lab", help="run one attack in the simulator and say what happened",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description=textwrap.fill(
                           "Runs the real protocol cores in the deterministic simulator with one attack in place "
                           "and a steady load from two honest clients, then reports what the honest replicas "
                           "dropped (by rule and sender), whether safety and liveness held, and the command that "
                           "replays the same run. The same seed gives the same run.", 78),
                       epilog=LAB_EXAMPLES)
    p.add_argument("scenario", metavar="ATTACK", help=f"an attack from '{PROG} attacks'")
    p.add_argument("--mode", choices=("pbft", "paxos"), default="pbft", help="the protocol (default pbft)")
    p.add_argument("--f", type=int_at_least(1), default=1, help="faults tolerated: n = 3f+1 or 2f+1 (default 1)")
    p.add_argument("--byzantine-count", type=int_at_least(1), default=1, metavar="K",
                   help="replicas that run a replica attack (default 1; above f the mode promises nothing)")
    p.add_argument("--seed", type=int_at_least(0), default=1, help="the run's seed (default 1)")
    p.add_argument("--unsafe-disable", metavar="RULE", choices=list(SWITCHES), default=None,
                   help="turn one safety rule off in every replica, to see what it prevents (lab only; "
                        f"one of: {', '.join(SWITCHES)})")
    p.add_argument("--real", action="store_true",
                   help="run on real replica processes on 127.0.0.1 (a fresh cluster in a temporary directory) "
                        "instead of the simulator: replica strategies and client attacks only; about 10-60 s")
    p.add_argument("--keep-dir", metavar="DIR", default=None,
                   help="with --real: make the cluster in DIR (must not exist) and keep it: keys, ledgers, logs")
    p.add_argument("--trace", metavar="FILE.html", default=None,
                   help="write the run's message-sequence chart: one self-contained HTML file (with --real, "
                        "from the replicas' own --trace-log event logs)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (safety, liveness, drops_by_rule, byzantine, seed, ...)")
    p.set_defaults(func=cmd_lab)


def cmd_attacks(args) -> int:
    from bft.app.attacks import ATTACKS

    if args.json:
        print(json.dumps([a.as_json() for a in ATTACKS], indent=2))
        return 0
    kinds = {"replica": "Byzantine replicas", "client": "hostile clients", "network": "the network"}
    for kind, title in kinds.items():
        print(f"== {title}")
        for a in (a for a in ATTACKS if a.kind == kind):
            print(f"{a.name}: {a.what}")
            print(f"  stopped by: {a.defence}")
            for mode in ("pbft", "paxos"):
                o = a.outcome(mode)
                if o is None:
                    continue
                rules = ", ".join(o.rules) or "no drop rule (see above)"
                outcome = f"safety {o.safety}, liveness {o.liveness}"
                print(f"  {mode}: {rules}; {outcome}; {o.observe}")
                print(f"    {a.command(mode)}")
        print()
    print("== rule switches (lab only: each turns one safety rule off in every replica)")
    for name, sw in SWITCHES.items():
        print(f"{name} ({sw.mode}): {sw.rule}")
        print(f"    {sw.command(name)}")
    print()
    print("Add --real to a replica or client attack's command to run it on real replica processes on 127.0.0.1 "
          "(--json shows each one's real_command).")
    print(f"Rules are explained in docs/rules.md. The runtime's own attacks (lying-receipts, lying-proofs, "
          f"lying-history, empty-transfer, drip-transfer) act in a replica process: "
          f"'{PROG} replica DIR --id 3 --byzantine lying-receipts' (or '{PROG} lab lying-proofs --real').")
    return 0


def cmd_lab(args) -> int:
    from bft.app.clusterinit import MAX_F
    from bft.sim.lab import LabError, run_lab
    from bft.sim.trace import TraceRecorder

    if args.f > MAX_F:
        raise UsageError(f"--f {args.f} is more than this tool supports ({MAX_F})")
    if args.trace is not None and (Path(args.trace).is_dir() or not Path(args.trace).parent.is_dir()):
        # before the run, which on real processes takes up to a minute
        raise UsageError(f"--trace {args.trace}: give a file in a directory that exists")
    if args.real:
        return _real_lab(args)
    if args.keep_dir:
        raise UsageError("--keep-dir goes with --real (the simulator keeps no files)")
    # the cores' own warnings (an equivocation seen, a leader distrusted) would repeat, once per
    # simulated replica, what the narrative says once
    logging.getLogger("bft").setLevel(logging.ERROR)
    try:
        recorder = TraceRecorder() if args.trace else None
        r = run_lab(args.scenario, mode=args.mode, f=args.f, count=args.byzantine_count, seed=args.seed,
                    unsafe=args.unsafe_disable, recorder=recorder)
    except LabError as e:
        raise UsageError(str(e)) from None
    if recorder is not None:
        write_trace(args.trace, r, recorder)
    return _report(args, r)


def _real_lab(args) -> int:
    from bft.app.reallab import run_real_lab
    from bft.runtime.tracelog import merge
    from bft.sim.lab import LabError
    from bft.sim.trace import TraceRecorder

    if args.unsafe_disable:
        raise UsageError("rule switches run in the simulator only: a real replica never turns a safety rule off; "
                         "drop --real")
    if args.keep_dir and Path(args.keep_dir).exists():
        raise UsageError(f"{args.keep_dir} exists; --keep-dir makes a new directory, give one that does not exist")
    try:
        r, events = run_real_lab(args.scenario, mode=args.mode, f=args.f, count=args.byzantine_count, seed=args.seed,
                                 trace=bool(args.trace), keep=args.keep_dir)
    except LabError as e:
        raise UsageError(str(e)) from None
    if args.trace:
        recorder = TraceRecorder()
        drawn = merge(events, recorder, 0.0)
        r.notes.append(f"the trace holds {drawn} messages from the replicas' event logs")
        write_trace(args.trace, r, recorder)
    return _report(args, r)


def _report(args, r: LabResult) -> int:
    print(json.dumps(r.as_json(), indent=2) if args.json else narrative(r))
    return 0


def write_trace(path: str, r: LabResult, recorder: TraceRecorder) -> None:
    from bft.sim.trace import render_html

    lanes = [f"r{i}" for i in range(r.n)] + [f"client{c}" for c in range(3)]
    summary = [f"{r.scenario} in {r.mode}, n={r.n}, f={r.f}, seed {r.seed}",
               f"safety {r.safety}" + (f": {r.violation}" if r.violation else ""), f"liveness {r.liveness}",
               *r.notes, f"replay: {r.replay} --trace {path}"]
    page = render_html(recorder, lanes, [f"r{i}" for i in r.byzantine] + (["client2"] if r.kind == "client" else []),
                       f"bftledger lab: {r.scenario} ({r.mode})", summary)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(page)


def narrative(r: LabResult) -> str:
    from bft.adversary import STRATEGIES
    from bft.app.attacks import BY_NAME
    from bft.app.rules_table import families

    texts = {rule.label: rule.text for fam in families() for rule in fam}
    a = BY_NAME.get(r.scenario)
    where = "real processes" if r.real else "the simulator"
    lines = [f"lab: {r.scenario} in {r.mode} on {where}, n={r.n} (tolerates f={r.f}), seed {r.seed}"]
    if r.byzantine:
        who = ", ".join(str(i) for i in r.byzantine)
        what = a.what if a else STRATEGIES.get(r.scenario, "")      # a runtime strategy has no lab entry
        lines.append(f"  attacker: replica {who} ({r.scenario}): {what}")
    else:
        lines.append(f"  attack: {a.what if a else r.scenario}")
    lines += [f"  note: {n}" for n in r.notes]
    expected = a.outcome(r.mode) if a is not None and r.unsafe is None else None
    if r.unsafe is not None:
        breaks = SWITCHES[r.unsafe].breaks
        lines.append(f"  what to expect: with '{r.unsafe}' off, the {breaks} violation that rule prevents")
    elif expected is not None:
        if expected.rules or r.mode == "pbft":
            lines.append(f"  what should stop it: {a.defence}")
        lines.append(f"  what to expect: {expected.observe} (safety {expected.safety}, liveness {expected.liveness})")
    mine = r.attacker_drops()
    if mine:
        lines.append("  the honest replicas dropped from the attacker:")
        lines += [f"    {k:>6}  {label}: {texts.get(label, '')}"
                  for label, k in sorted(mine.items(), key=lambda kv: -kv[1])]
    elif r.byzantine or r.kind == "client":
        lines.append("  the honest replicas dropped nothing the attacker sent")
    if r.suspicions:
        lines.append("  the backups suspected the primary:")
        lines += [f"    {k:>6}  {label}: {texts.get(label, '')}" for label, k in r.suspicions.items()]
    rest = {k: v - mine.get(k, 0) for k, v in r.drops_by_rule.items() if v - mine.get(k, 0) > 0}
    if rest:
        lines.append("  other drops (late, repeated or cut-off messages of honest replicas): "
                     + ", ".join(f"{label} {k}" for label, k in rest.items()))
    if r.violation:
        lines.append(f"  safety: VIOLATED: {r.violation}")
        if r.divergence:
            lines.append(f"  the honest ledgers differ at height {r.divergence['height']}:")
            lines += [f"    replica {i}: block {b['block']}, batch root {b['batch_root']}, "
                      f"{b['transactions']} transaction(s)" for i, b in r.divergence["blocks"].items()]
    elif r.real:
        lines.append("  safety: held (the honest replicas' ledgers, read from disk, agree and pass their audits)")
    else:
        lines.append("  safety: held (no two honest replicas disagree, every acknowledged result was executed)")
    if r.violation and not r.real:
        lines.append("  liveness: not measured (the run stops at the first safety violation)")
    elif r.stalled:
        lines.append("  liveness: VIOLATED: nothing committed in the watched window (a livelock)")
    elif r.unacked:
        when = "within the lab's deadline" if r.real else "ever"
        lines.append(f"  liveness: VIOLATED: {r.unacked} of {r.requests} honest requests not acknowledged {when}")
    else:
        lines.append(f"  liveness: held (all {r.requests} honest requests acknowledged)")
    views = sorted(set(r.views.values()))
    word = "view" if r.mode == "pbft" else "ballot"
    lines.append(f"  the honest replicas ended in {word} {', '.join(map(str, views))}; "
                 f"ledger heights {', '.join(f'{i}:{h}' for i, h in r.heights.items())}")
    lines.append(f"  replay: {r.replay}")
    return "\n".join(lines)

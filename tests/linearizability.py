"""A linearizability checker for client histories (Jepsen's method), per key.

Each key is a register with compare-and-set: ``put(v)`` sets it, ``get()`` returns its value
(None when absent), ``cas(expected, new)`` sets it when it holds ``expected`` (None means
absent) and reports whether it did. Linearizability is compositional (Herlihy & Wing), so
the keys are checked apart.

The search is Wing & Gong's, with Lowe's memoisation: linearize, one at a time, an operation
that was invoked before every remaining completed operation returned; remember every
(set of linearized operations, register value) already explored. An operation that
timed out is indeterminate: it may take effect at any point after its invocation, or never,
so the search never has to linearize it and its completion time is infinite.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

PUT, GET, CAS = "put", "get", "cas"


@dataclass
class Op:
    key: str
    kind: str                      # put | get | cas
    invoke: float
    complete: float = math.inf     # inf: timed out (indeterminate)
    value: bytes | None = None     # put: the value; cas: the new value
    expected: bytes | None = None  # cas: the expected value (None = absent)
    result: object = None          # get: the value read; cas: True/False; put: None
    client: int = 0

    @property
    def indeterminate(self) -> bool:
        return self.complete == math.inf


@dataclass
class Verdict:
    ok: bool
    key: str | None = None
    explored: int = 0
    ops: list[Op] = field(default_factory=list)

    def __str__(self) -> str:
        if self.ok:
            return f"linearizable ({self.explored} states explored)"
        return f"key {self.key!r}: no linearization of its {len(self.ops)} operations ({self.explored} states)"


def _step(op: Op, state: bytes | None) -> tuple[bool, bytes | None]:
    """Apply ``op`` to the register; (is the op's recorded result possible, the new state)."""
    if op.kind == PUT:
        return True, op.value
    if op.kind == GET:
        return op.indeterminate or op.result == state, state
    swapped = state == op.expected
    if not op.indeterminate and op.result != swapped:
        return False, state
    return True, op.value if swapped else state


def check_key(ops: list[Op], initial: bytes | None = None, budget: int = 2_000_000) -> Verdict:
    ops = sorted(ops, key=lambda o: o.invoke)
    n = len(ops)
    must = 0
    for i, o in enumerate(ops):
        if not o.indeterminate:
            must |= 1 << i
    seen: set[tuple[int, bytes | None]] = set()
    stack: list[tuple[int, bytes | None]] = [(0, initial)]
    explored = 0
    while stack:
        done, state = stack.pop()
        if done & must == must:
            return Verdict(True, ops[0].key if ops else None, explored)
        if (done, state) in seen:
            continue
        seen.add((done, state))
        explored += 1
        if explored > budget:
            raise RuntimeError(f"the search exceeded {budget} states; split the history")
        # every remaining op invoked before the earliest remaining completion may go next
        horizon = min((ops[i].complete for i in range(n) if not done >> i & 1), default=math.inf)
        for i in range(n):
            if done >> i & 1:
                continue
            o = ops[i]
            if o.invoke > horizon:
                break                               # sorted by invocation: none later can go first
            possible, nxt = _step(o, state)
            if possible:
                stack.append((done | 1 << i, nxt))
    return Verdict(False, ops[0].key if ops else None, explored, ops)


def check(history: list[Op]) -> Verdict:
    """Every key's history linearizable? The first key that is not, with its operations."""
    by_key: dict[str, list[Op]] = {}
    for op in history:
        by_key.setdefault(op.key, []).append(op)
    explored = 0
    for key in sorted(by_key):
        v = check_key(by_key[key])
        explored += v.explored
        if not v.ok:
            return v
    return Verdict(True, None, explored)

"""The linearizability checker (tests/linearizability.py) on histories whose verdict is known:
it must accept the linearizable ones and refuse the others, so that the partition test
that uses it can fail."""
from __future__ import annotations

import math
import random

from tests.linearizability import CAS, GET, PUT, Op, check, check_key


def test_sequential_history_is_linearizable() -> None:
    h = [Op("k", PUT, 0, 1, value=b"a"), Op("k", GET, 2, 3, result=b"a"),
         Op("k", CAS, 4, 5, expected=b"a", value=b"b", result=True), Op("k", GET, 6, 7, result=b"b"),
         Op("k", CAS, 8, 9, expected=b"a", value=b"c", result=False)]
    assert check(h).ok


def test_a_stale_read_is_refused() -> None:
    h = [Op("k", PUT, 0, 1, value=b"a"), Op("k", PUT, 2, 3, value=b"b"), Op("k", GET, 4, 5, result=b"a")]
    v = check(h)
    assert not v.ok and v.key == "k"


def test_concurrent_operations_may_take_either_order() -> None:
    h = [Op("k", PUT, 0, 10, value=b"a"), Op("k", PUT, 1, 9, value=b"b"), Op("k", GET, 11, 12, result=b"a")]
    assert check(h).ok
    h[-1].result = b"b"
    assert check(h).ok
    h[-1].result = b"c"
    assert not check(h).ok


def test_an_indeterminate_write_may_take_effect_late_or_never() -> None:
    lost = Op("k", PUT, 0, math.inf, value=b"x")
    assert check([lost, Op("k", GET, 5, 6, result=None)]).ok           # never
    assert check([lost, Op("k", GET, 5, 6, result=b"x")]).ok           # later
    assert not check([Op("k", GET, 5, 6, result=b"x")]).ok              # nobody wrote it


def test_two_successful_cas_from_the_same_value_are_refused() -> None:
    h = [Op("k", PUT, 0, 1, value=b"0"),
         Op("k", CAS, 2, 5, expected=b"0", value=b"1", result=True),
         Op("k", CAS, 3, 6, expected=b"0", value=b"2", result=True)]
    assert not check(h).ok


def test_keys_are_checked_apart_and_a_bad_one_is_named() -> None:
    h = [Op("a", PUT, 0, 1, value=b"1"), Op("b", PUT, 0, 1, value=b"1"), Op("b", GET, 2, 3, result=None)]
    v = check(h)
    assert not v.ok and v.key == "b"


def test_random_histories_of_a_real_register_are_linearizable_and_a_mutated_read_is_not() -> None:
    """Histories made by an atomic register with random overlaps (seeded): accepted; the same
    history with one read changed to a value nobody wrote: refused."""
    for seed in range(30):
        rng = random.Random(seed)
        state, ops, t = None, [], 0.0
        for i in range(40):
            t += rng.random()
            start = t - rng.random() * 0.5                 # invoked a little before it took effect
            end = t + rng.random() * 0.5
            kind = rng.choice([PUT, GET, CAS])
            if kind == PUT:
                state = b"%d" % i
                ops.append(Op("k", PUT, start, end, value=state))
            elif kind == GET:
                ops.append(Op("k", GET, start, end, result=state))
            else:
                exp = rng.choice([state, b"nope"])
                ok = exp == state
                ops.append(Op("k", CAS, start, end, expected=exp, value=b"c%d" % i, result=ok))
                if ok:
                    state = b"c%d" % i
        assert check_key(ops).ok, f"seed {seed}"
        reads = [o for o in ops if o.kind == GET]
        if reads:
            reads[len(reads) // 2].result = b"never written"
            assert not check_key(ops).ok, f"seed {seed}"

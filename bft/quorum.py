"""Quorum arithmetic, in one place so that no module writes its own 2f+1."""
from __future__ import annotations


def pbft_n(f: int) -> int:
    return 3 * f + 1


def pbft_f(n: int) -> int:
    """The most faults n replicas tolerate in pbft: n >= 3f+1."""
    return (n - 1) // 3


def paxos_n(f: int) -> int:
    return 2 * f + 1


def paxos_f(n: int) -> int:
    return (n - 1) // 2


def prepare_quorum(f: int) -> int:
    """PREPAREs from distinct backups that, with the PRE-PREPARE, make a request prepared."""
    return 2 * f


def commit_quorum(f: int) -> int:
    """Matching COMMITs (own included) that make a request committed-local."""
    return 2 * f + 1


def checkpoint_quorum(f: int) -> int:
    return 2 * f + 1


def view_change_quorum(f: int) -> int:
    return 2 * f + 1


def join_quorum(f: int) -> int:
    """VIEW-CHANGEs for higher views after which a replica joins (one of them is honest)."""
    return f + 1


def reply_quorum(f: int) -> int:
    """Matching REPLYs a pbft client needs (one of them is honest)."""
    return f + 1


def majority(n: int) -> int:
    return n // 2 + 1

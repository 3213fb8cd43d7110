"""What every ``bftledger`` subcommand shares: the program name, the one-line usage
errors, argument types, and running a trio function from a synchronous command."""
from __future__ import annotations

import argparse
import sys
from typing import Callable, NoReturn

PROG = "bftledger"


class UsageError(Exception):
    """Arguments that parse but make no sense together (exit code 2, like argparse)."""


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the brief usage block confuses more than it helps)."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{PROG}: error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(2)


def int_at_least(low: int) -> Callable[[str], int]:
    """An argparse type; argparse prefixes its message with the option's name."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, not {text!r}") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, not {v}")
        return v
    return parse


def id_list(text: str) -> list[int]:
    """'0,1,2': distinct replica ids, for argparse."""
    try:
        ids = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected replica ids separated by commas (like 0,1), got {text!r}") from None
    if any(i < 0 for i in ids) or len(set(ids)) != len(ids):
        raise argparse.ArgumentTypeError(f"expected distinct replica ids of 0 or more, got {text!r}")
    return sorted(ids)


def port(text: str) -> int:
    v = int_at_least(1)(text)
    if v > 65535:
        raise argparse.ArgumentTypeError(f"must be a port number up to 65535, not {v}")
    return v


def add_query_args(p: argparse.ArgumentParser, timeout: float, what: str) -> None:
    """DIR, --json, --client and --timeout: the arguments of the commands that ask the replicas."""
    p.add_argument("dir", metavar="DIR", help="cluster directory")
    p.add_argument("--json", action="store_true", help=f"print {what}")
    p.add_argument("--client", type=int_at_least(0), default=0, metavar="N",
                   help="authenticate with client key N (default: 0)")
    p.add_argument("--timeout", type=float, default=timeout, metavar="S",
                   help=f"how long to wait for each replica's answer (default: {timeout:g})")


def fail(message: str, code: int) -> int:
    sys.stderr.write(f"{PROG}: error: {message}\n")
    return code


def run_async(fn, *args):
    import trio

    from bft.runtime.process import unwrap

    try:
        return trio.run(fn, *args)
    except BaseExceptionGroup as eg:
        raise unwrap(eg) from None


Subparsers = argparse._SubParsersAction

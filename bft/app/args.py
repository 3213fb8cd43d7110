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


MAX_HEIGHT = (1 << 64) - 1      # ledger.wire.MAX_U64: heights travel as unsigned 64-bit integers


def int_at_least(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type; argparse prefixes its message with the option's name."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, not {text!r}") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, not {v}")
        if high is not None and v > high:
            raise argparse.ArgumentTypeError(f"must be at most {high}, not {v}")
        return v
    return parse


def height(low: int = 1) -> Callable[[str], int]:
    """An argparse type for a block height (``low`` or more, at most MAX_HEIGHT)."""
    return int_at_least(low, MAX_HEIGHT)


def seconds(text: str) -> float:
    """An argparse type for a timeout: a positive number of seconds."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, not {text!r}") from None
    if not v > 0:                                      # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text!r}")
    return v


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


def client_arg(p: argparse.ArgumentParser) -> None:
    """--client N: which of DIR's client keys to connect with."""
    p.add_argument("--client", type=int_at_least(0), default=0, metavar="N",
                   help="use client key DIR/keys/client-N.key (default: 0)")


def timeout_arg(p: argparse.ArgumentParser, default: float, what: str) -> None:
    """--timeout S: ``what`` happens after S seconds."""
    p.add_argument("--timeout", type=seconds, default=default, metavar="S", help=f"{what} (default: {default:g})")


def add_query_args(p: argparse.ArgumentParser, timeout: float, what: str) -> None:
    """DIR, --json, --client and --timeout: the arguments of the commands that ask the replicas."""
    p.add_argument("dir", metavar="DIR", help="cluster directory")
    p.add_argument("--json", action="store_true", help=f"print {what}")
    client_arg(p)
    timeout_arg(p, timeout, "how long to wait for each replica's answer")


def parse_head(text: str | None) -> bytes | None:
    """--expect-head's 32-byte block hash (None when not given), or a UsageError."""
    if text is None:
        return None
    try:
        h = bytes.fromhex(text)
    except ValueError:
        raise UsageError(f"--expect-head {text!r} is not a hex block hash") from None
    if len(h) != 32:
        raise UsageError("--expect-head takes a 64-hex-digit block hash (see 'bftledger status')")
    return h


def read_text(path: str, what: str = "") -> str:
    """The text of FILE ('-': standard input), bytes that are not UTF-8 replaced; a file that
    cannot be read is a UsageError ("cannot read [what ]FILE: why")."""
    try:
        if path == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as fh:
                data = fh.read()
    except OSError as e:
        raise UsageError(f"cannot read {what + ' ' if what else ''}{path}: {e.strerror}") from None
    return data.decode("utf-8", errors="replace")


def fail(message: str, code: int) -> int:
    sys.stderr.write(f"{PROG}: error: {message}\n")
    return code


def run_async(fn, *args, sigterm: bool = False):
    """``trio.run(fn, *args)``, raising the one exception a nursery wrapped. With ``sigterm``,
    SIGTERM is Ctrl-C (a KeyboardInterrupt in ``fn``), so that the clean-up of whatever ``fn``
    started runs either way (as in ``bft.app.demo``)."""
    import signal

    import trio

    from bft.runtime.process import unwrap

    async def interruptible():
        async def on_sigterm() -> None:
            with trio.open_signal_receiver(signal.SIGTERM) as sigs:
                async for _ in sigs:
                    raise KeyboardInterrupt

        async with trio.open_nursery() as nursery:
            nursery.start_soon(on_sigterm)
            result = await fn(*args)
            nursery.cancel_scope.cancel()
        return result

    try:
        return trio.run(interruptible if sigterm else fn, *(() if sigterm else args))
    except BaseExceptionGroup as eg:
        raise unwrap(eg) from None


Subparsers = argparse._SubParsersAction

"""Replica processes for ``bftledger up``, the demo and the integration tests.

Every process started through ``ReplicaProcess`` is tracked by PID and ended by PID
(``stop``/``kill``); nothing here signals processes by name.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Callable, TextIO

from ledger.cluster import Cluster

REPO = Path(__file__).resolve().parents[2]
ERROR_PREFIX = "bftledger: error: "          # how a bftledger command reports the error it stops on
SETTLE = 5.0             # 'up': once one replica failed to start, how long the others get to end or answer


def replica_command(cluster_dir: str | os.PathLike[str], replica: int, byzantine: str | None = None,
                    log_level: str = "info", extra: list[str] | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "bft", "replica", str(cluster_dir), "--id", str(replica),
           "--log-level", log_level]
    if byzantine:
        cmd += ["--byzantine", byzantine]
    return cmd + list(extra or [])


def _die_with_parent() -> None:
    """In the child before exec (Linux): SIGTERM this replica when the process that started it
    dies, even by SIGKILL, so that no replica outlives 'up', the demo or a test run."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except Exception:
        pass


def _env() -> dict:
    """The child finds this source tree even when it is not installed."""
    env = dict(os.environ)
    path = env.get("PYTHONPATH", "")
    if str(REPO) not in path.split(os.pathsep):
        env["PYTHONPATH"] = str(REPO) + (os.pathsep + path if path else "")
    return env


class ReplicaProcess:
    """One ``bftledger replica`` child process.

    ``forward``: pipe the child's output through this process, line by line, to ``forward``,
    except its ``bftledger: error:`` line, which becomes ``reason`` (``exit_reason()``), so that
    the caller reports why the replica stopped in its own words, once. ``own_session``: start the
    child in a session (and process group) of its own, so that the terminal's Ctrl-C reaches only
    the caller, which then stops the child with SIGTERM, instead of every process at once."""

    def __init__(self, cluster_dir: str | os.PathLike[str], replica: int, *, byzantine: str | None = None,
                 log: str | os.PathLike[str] | IO | None = None, log_level: str = "info",
                 wrap: list[str] | None = None, forward: TextIO | None = None,
                 own_session: bool = False, extra: list[str] | None = None) -> None:
        self.cluster_dir = str(Path(cluster_dir).resolve())     # the child runs in another directory
        self.replica = replica
        self.byzantine = byzantine
        self.log = log
        self.log_level = log_level
        self.wrap = list(wrap or [])                 # a command prefix, e.g. ip netns exec NS
        self.extra = list(extra or [])               # more 'bftledger replica' options (--group, --trace-log)
        self.forward = forward
        self.own_session = own_session
        self.reason: str | None = None               # the child's error line (with forward)
        self.proc: subprocess.Popen | None = None
        self._log_fh = None
        self._reader: threading.Thread | None = None

    def start(self) -> "ReplicaProcess":
        if self.alive:
            raise RuntimeError(f"replica {self.replica} is already running")
        out = None
        if self.forward is not None:
            out = subprocess.PIPE
        elif isinstance(self.log, (str, os.PathLike)):
            self._log_fh = open(self.log, "ab")
            out = self._log_fh
        elif self.log is not None:
            out = self.log
        self.reason = None
        self.proc = subprocess.Popen(self.wrap + replica_command(self.cluster_dir, self.replica, self.byzantine,
                                                                 self.log_level, self.extra),
                                     stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.STDOUT if self.forward is not None else out,
                                     env=_env(), cwd=str(REPO), start_new_session=self.own_session,
                                     preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        if self.forward is not None:
            self._reader = threading.Thread(target=self._pump, args=(self.proc.stdout,), daemon=True,
                                            name=f"replica-{self.replica}-output")
            self._reader.start()
        return self

    def _pump(self, pipe: IO[bytes]) -> None:
        try:
            for raw in pipe:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if line.startswith(ERROR_PREFIX):
                    self.reason = line[len(ERROR_PREFIX):].strip()
                    continue
                try:
                    self.forward.write(line + "\n")
                    self.forward.flush()
                except (OSError, ValueError):
                    pass
        except (OSError, ValueError):
            pass
        finally:
            pipe.close()

    def drain(self, timeout: float = 2.0) -> None:
        """With ``forward``, once the child ended: until its last line is read (the pipe ends with it)."""
        if self._reader is not None:
            self._reader.join(timeout)

    def exit_reason(self) -> str:
        """Why the child ended, one line that starts with "replica I": its own error line if it
        printed one, else how it ended."""
        self.drain()
        if self.reason:
            mine = self.reason.startswith(f"replica {self.replica} ")
            return self.reason if mine else f"replica {self.replica}: {self.reason}"
        code = None if self.proc is None else self.proc.poll()
        if code is None:
            how = "is still running"
        elif code < 0:
            try:
                how = f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"was killed by signal {-code}"
        else:
            how = f"exited with status {code}"
        return f"replica {self.replica} (pid {self.pid}) {how}"

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """kill -9: no clean shutdown, as in a crash."""
        if self.alive:
            self.proc.send_signal(signal.SIGKILL)
        self.wait(5)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``."""
        if self.alive:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGKILL)
        self.wait(5)

    def wait(self, timeout: float | None = None) -> int | None:
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        finally:
            if self.proc.poll() is not None and self._log_fh is not None:
                self._log_fh.close()
                self._log_fh = None


def stop_all(procs: list[ReplicaProcess], timeout: float = 5.0) -> None:
    """SIGTERM to all at once, then SIGKILL to whichever is still there after ``timeout``."""
    for p in procs:
        if p.alive:
            try:
                p.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + timeout
    for p in procs:
        if p.proc is not None:
            try:
                p.proc.wait(max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.proc.send_signal(signal.SIGKILL)
        p.wait(5)


def alerts(st: list[dict], quorum: int) -> dict[int, str]:
    """One line per replica that needs an operator's eye: alone in a view change for longer
    than a few timeouts (no quorum joined it), or behind the most advanced replica by more
    than a checkpoint interval (issue 17: such a replica looked fine while the cluster's
    whole fault budget was spent)."""
    up = [s for s in st if s.get("reachable")]
    if not up:
        return {}
    top = max(s.get("height", 0) for s in up)
    out: dict[int, str] = {}
    for s in up:
        secs = s.get("view_change_seconds", 0)
        if s.get("in_view_change") and secs > 5 and s.get("view_change_joined", quorum) < quorum:
            out[s["id"]] = (f"in a view change to view {s.get('view')} for {secs:.0f} s that only "
                            f"{s.get('view_change_joined')} of the {quorum} needed joined")
        k = s.get("checkpoint_interval")
        behind = top - s.get("height", 0)
        if k and behind > k:
            why = f"behind by {behind} blocks, more than a checkpoint interval ({k})"
            out[s["id"]] = f"{out[s['id']]}; {why}" if s["id"] in out else why
    return out


def status(cluster: Cluster, timeout: float = 2.0, client: int = 0) -> list[dict]:
    """``bftledger status`` as a function (runs its own event loop)."""
    import trio

    from ledger.net.session import query_status

    signer = cluster.load_client_key(client)
    return trio.run(query_status, cluster, client, signer, timeout)


def wait_ready(cluster: Cluster, ids: list[int] | None = None, timeout: float = 20.0,
               procs: list[ReplicaProcess] | None = None) -> list[dict]:
    """Until the replicas ``ids`` (default: all) answer status requests; raises TimeoutError."""
    want = set(range(cluster.n) if ids is None else ids)
    deadline = time.monotonic() + timeout
    st: list[dict] = []
    while time.monotonic() < deadline:
        st = status(cluster, timeout=1.0)
        if all(st[i].get("reachable") for i in want):
            return st
        for p in procs or []:
            if p.proc is not None and p.proc.poll() is not None and p.replica in want:
                raise RuntimeError(f"{p.exit_reason()} while starting")
        time.sleep(0.1)
    missing = sorted(i for i in want if not st or not st[i].get("reachable"))
    raise TimeoutError(f"replicas {missing} of {cluster.directory} did not answer within {timeout:g} s")


async def status_async(cluster: Cluster, timeout: float = 2.0, client: int = 0) -> list[dict]:
    from ledger.net.session import query_status

    return await query_status(cluster, client, cluster.load_client_key(client), timeout)


async def await_ready(cluster: Cluster, ids: list[int] | None = None, timeout: float = 20.0,
                      procs: list[ReplicaProcess] | None = None) -> list[dict]:
    """``wait_ready`` for callers already inside trio."""
    import trio

    want = set(range(cluster.n) if ids is None else ids)
    deadline = time.monotonic() + timeout
    st: list[dict] = []
    while time.monotonic() < deadline:
        st = await status_async(cluster, timeout=1.0)
        if all(st[i].get("reachable") for i in want):
            return st
        for p in procs or []:
            if p.proc is not None and p.proc.poll() is not None and p.replica in want:
                raise RuntimeError(f"{p.exit_reason()} while starting")
        await trio.sleep(0.1)
    missing = sorted(i for i in want if not st or not st[i].get("reachable"))
    raise TimeoutError(f"replicas {missing} of {cluster.directory} did not answer within {timeout:g} s")


def _not_answering(cluster: Cluster, procs: list[ReplicaProcess]) -> tuple[list[int], str]:
    """The replicas of ``procs`` that did not answer a status query themselves (the answer must
    carry the child's PID: another cluster's replica on the same port is not ours), and why not."""
    if not procs:
        return [], ""
    try:
        st = status(cluster, timeout=0.5)
    except Exception as e:                     # e.g. no client key to ask with
        return [p.replica for p in procs], str(e) or type(e).__name__
    missing = [p.replica for p in procs
               if not (st[p.replica].get("reachable") and st[p.replica].get("pid") == p.pid)]
    why = "; ".join(f"replica {i}: {st[i].get('error') or 'answered with another PID'}" for i in missing)
    return missing, why


def run_up(cluster: Cluster, ready_timeout: float = 30.0) -> int:
    """``bftledger up``: every replica as a child process until a signal; no child outlives it.

    It prints each replica's PID as it starts it, and "all N replicas are up" only once every
    one of them answered a status query itself (with its own PID: a replica of another 'up' on
    the same ports does not count). A replica that ends before that fails the start: once the
    others have ended too or answered (at most ``SETTLE`` s), they are stopped, each failed
    replica's reason (its own error line) is printed once, and the exit status is 1. Ctrl-C stops them all at any moment (exit status 130, as every
    bftledger command interrupted); SIGTERM or SIGHUP too (exit status 0: how a supervisor
    stops it). The replicas run in a session of their own, so that the terminal's Ctrl-C reaches
    only this process, which stops them with SIGTERM; their output passes through this one."""
    def say(line: str) -> None:
        print(line, flush=True)

    def err(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    stopping: dict[str, int | None] = {"sig": None}

    def on_signal(signum, _frame) -> None:
        if stopping["sig"] is None:
            stopping["sig"] = signum

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:                                         # the handlers stay until the last line is printed
        return _up(cluster, stopping, ready_timeout, say, err)
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _up(cluster: Cluster, stopping: dict[str, int | None], ready_timeout: float,
        say: Callable[[str], None], err: Callable[[str], None]) -> int:
    procs = [ReplicaProcess(cluster.directory, r.id, forward=sys.stderr, own_session=True)
             for r in cluster.replicas]
    started: list[ReplicaProcess] = []
    failed: list[ReplicaProcess] = []            # ended on their own before all were up
    answered: set[int] = set()                   # answered a status query themselves
    reported: set[int] = set()
    ready = False
    code = 0
    try:
        say(f"bftledger: starting {cluster.n} {cluster.mode} replicas of {cluster.directory} "
            f"(tolerates f={cluster.f} {'Byzantine' if cluster.protocol.byzantine else 'crashed'})")
        for p in procs:
            if stopping["sig"] is not None:
                break
            started.append(p.start())
            r = cluster.replicas[p.replica]
            say(f"  replica {p.replica}  pid {p.pid}  {r.host}:{r.port}")
        deadline = time.monotonic() + ready_timeout
        warned = False
        give_up = 0.0
        while stopping["sig"] is None and started:           # starting: until each answered
            failed += [p for p in started if p not in failed and p.proc.poll() is not None]
            live = [p for p in started if p not in failed]
            if failed:
                # the start failed; stop once the others have ended too or answered (so that every
                # replica that cannot start is named, not only the first), or after SETTLE seconds
                give_up = give_up or time.monotonic() + SETTLE
                if all(p.replica in answered for p in live) or time.monotonic() > give_up:
                    break
            missing, why = _not_answering(cluster, [p for p in live if p.replica not in answered])
            answered |= {p.replica for p in live} - set(missing)
            if not failed and len(answered) == len(started) == cluster.n:
                ready = True
                say(f"bftledger: all {cluster.n} replicas are up (each answered a status query). "
                    f"Try 'bftledger put {cluster.directory} KEY VALUE'. Ctrl-C stops them.")
                break
            if not warned and time.monotonic() > deadline:
                warned = True
                err(f"bftledger: warning: replicas {', '.join(map(str, missing))} have not answered a status "
                    f"query within {ready_timeout:g} s ({why}); still waiting, Ctrl-C stops them")
            time.sleep(0.1)
        while ready and stopping["sig"] is None:             # running: until a signal
            for p in started:
                if p.replica not in reported and p.proc.poll() is not None:
                    reported.add(p.replica)
                    err(f"bftledger: {p.exit_reason()}")
            if len(reported) == len(started):
                err("bftledger: error: every replica has exited")
                code = 1
                break
            time.sleep(0.2)
    finally:
        stop_all(started)
    # why each replica that ended on its own ended, once (one stopped here prints no error line)
    for p in started:
        p.drain()
        if p.replica not in reported and (p in failed or p.reason):
            reported.add(p.replica)
            err(f"bftledger: error: {p.exit_reason()}")
            if p not in failed:
                failed.append(p)
    if stopping["sig"] is not None:
        if len(started) == cluster.n:
            say(f"bftledger: stopped all {cluster.n} replicas")
        else:
            say(f"bftledger: stopped the {len(started)} replicas it had started (of {cluster.n})")
        return 130 if stopping["sig"] == signal.SIGINT else 0
    if failed and not ready:
        others = len(started) - len(failed)
        err(f"bftledger: error: {len(failed)} of {cluster.n} replicas could not start; stopped the other {others}"
            if others else f"bftledger: error: none of the {cluster.n} replicas could start")
        return 1
    return code


class LocalCluster:
    """The replicas of one cluster directory as local processes (demo, tests, benchmarks).

    Logs go to DIR/logs/replica-I.log. Use as a context manager: on exit every replica
    still running is stopped (SIGTERM, then SIGKILL), also when the body failed."""

    def __init__(self, directory: str | os.PathLike[str], *, log_level: str = "info",
                 wrap: dict[int, list[str]] | None = None) -> None:
        from ledger.cluster import load

        self.directory = Path(directory)
        self.cluster = load(self.directory)
        self.log_dir = self.directory / "logs"
        self.log_dir.mkdir(exist_ok=True)
        self.log_level = log_level
        self.wrap = dict(wrap or {})                 # replica -> command prefix (a network namespace)
        self.procs: dict[int, ReplicaProcess] = {}

    @property
    def n(self) -> int:
        return self.cluster.n

    def log_path(self, i: int) -> Path:
        return self.log_dir / f"replica-{i}.log"

    def start(self, ids: list[int] | None = None, byzantine: dict[int, str] | None = None,
              extra: dict[int, list[str]] | None = None) -> "LocalCluster":
        byzantine = byzantine or {}
        extra = extra or {}
        for i in range(self.n) if ids is None else ids:
            p = ReplicaProcess(self.directory, i, byzantine=byzantine.get(i), log=self.log_path(i),
                               log_level=self.log_level, wrap=self.wrap.get(i), extra=extra.get(i))
            self.procs[i] = p.start()
        return self

    def pid(self, i: int) -> int | None:
        p = self.procs.get(i)
        return p.pid if p is not None and p.alive else None

    def alive(self) -> list[int]:
        return sorted(i for i, p in self.procs.items() if p.alive)

    def kill(self, i: int) -> None:
        self.procs[i].kill()

    def stop(self, i: int) -> None:
        self.procs[i].stop()

    def stop_all(self) -> None:
        stop_all(list(self.procs.values()))

    def __enter__(self) -> "LocalCluster":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    async def status(self, timeout: float = 2.0) -> list[dict]:
        return await status_async(self.cluster, timeout)

    async def ready(self, ids: list[int] | None = None, timeout: float = 20.0) -> list[dict]:
        return await await_ready(self.cluster, self.alive() if ids is None else ids, timeout,
                                 list(self.procs.values()))

    async def converged(self, ids: list[int] | None = None, timeout: float = 15.0) -> list[dict]:
        """Until the replicas ``ids`` (default: the running ones) report one height and one head."""
        import trio

        ids = self.alive() if ids is None else ids
        deadline = time.monotonic() + timeout
        st: list[dict] = []
        while True:
            st = await self.status(1.0)
            sel = [st[i] for i in ids]
            if all(s.get("reachable") for s in sel) and len({(s["height"], s["head"]) for s in sel}) == 1:
                return st
            if time.monotonic() > deadline:
                seen = {i: (st[i].get("height"), str(st[i].get("head", ""))[:12]) for i in ids}
                raise TimeoutError(f"replicas {ids} did not converge within {timeout:g} s: {seen}")
            await trio.sleep(0.1)

    def audit(self, ids: list[int] | None = None) -> dict:
        from ledger.audit import audit

        return {i: audit(self.directory, i) for i in (range(self.n) if ids is None else ids)}

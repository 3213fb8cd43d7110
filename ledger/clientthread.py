"""The trio client on a thread of its own: ``SyncClient`` (blocking) and ``AsyncioClient``.

``ledger.client.Client`` is trio code: its connections are trio tasks. Programs that are
not trio programs get the same client by running it on a trio event loop in a daemon
thread (``TrioThread``) and handing it each call:

- ``SyncClient`` blocks the calling thread until the call is done; any number of
  threads may share one. Called inside a running event loop (trio or asyncio) it raises
  ``InsideEventLoop`` instead: blocking there would stall every task of that loop, and
  from inside trio the hand-over itself cannot work.
- ``AsyncioClient`` is what ``ledger.client.connect`` yields under asyncio: each method
  is awaited on the asyncio loop while the trio thread does the work, so no extra
  dependency (anyio) is needed. Cancelling the awaiting asyncio task cancels the call
  in the trio thread too.

Each call becomes a task in the trio thread, reporting to a ``concurrent.futures.Future``
(thread-safe, and awaitable from asyncio through ``asyncio.wrap_future``), so a thousand
concurrent asyncio tasks need no thousand threads. Closing (``close()``, or leaving
``async with``) cancels what is still running, ends the loop and joins the thread.

Any public coroutine method of ``Client`` is offered by both, also one not listed here
(``__getattr__`` hands it over by name), so a method added to ``Client`` works under
asyncio and blocking at once.
"""
from __future__ import annotations

import concurrent.futures
import functools
import inspect
import os
import sys
import threading
from typing import TYPE_CHECKING, Any, Callable

import trio

from ledger.cluster import Cluster

if TYPE_CHECKING:
    from ledger.client import Client
    from ledger.readproof import ReadProof
    from ledger.receipt import Receipt

DEFAULT_TIMEOUT = 60.0        # seconds an operation may take to commit (ledger.client re-exports it)
JOIN_TIMEOUT = 10.0


def _lc():
    """``ledger.client``, imported when first needed: it imports this module at its top."""
    import ledger.client

    return ledger.client


def running_async_library() -> str | None:
    """"trio" or "asyncio" when called inside that library's running event loop in this thread,
    else None. (asyncio is looked at only once something imported it: no loop runs otherwise,
    and importing it would slow every command of the CLI.)"""
    try:
        trio.lowlevel.current_trio_token()
        return "trio"
    except RuntimeError:
        pass
    asyncio = sys.modules.get("asyncio")
    if asyncio is not None:
        try:
            asyncio.get_running_loop()
            return "asyncio"
        except RuntimeError:
            pass
    return None


class InsideEventLoop(RuntimeError):
    """A blocking ``SyncClient`` call was made inside a running event loop (a programming error)."""


def _settle(fut: concurrent.futures.Future, value: Any = None, error: BaseException | None = None) -> None:
    """Report to ``fut`` unless its waiter gave up on it (cancelled it) already."""
    try:
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(value)
    except concurrent.futures.InvalidStateError:
        pass


def _unwrap(e: BaseException) -> BaseException:
    while isinstance(e, BaseExceptionGroup) and len(e.exceptions) == 1:
        e = e.exceptions[0]
    return e


def _closed() -> Exception:
    return _lc().LedgerError("the client was closed while the call was in flight")


class TrioThread:
    """One ``Client`` on a trio event loop in a daemon thread.

    ``started`` resolves once the client exists (or with the error that kept it from
    existing), ``finished`` once the loop has ended; ``call`` starts a method of the
    client as a task of that loop and may be used from any thread."""

    def __init__(self, cluster_dir: str | os.PathLike[str], client: int | None, timeout: float | None) -> None:
        self._args = (cluster_dir, client, timeout)
        self.started: concurrent.futures.Future = concurrent.futures.Future()
        self.finished: concurrent.futures.Future = concurrent.futures.Future()
        self.error: BaseException | None = None
        self.client: Client | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._calls: trio.Nursery | None = None
        self._stop: trio.Event | None = None
        self._stop_requested = False
        self.thread = threading.Thread(target=self._main, name="bftledger-client", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _main(self) -> None:
        async def main() -> None:
            async with _lc()._open(*self._args) as client:
                async with trio.open_nursery() as calls:
                    self.client, self._calls = client, calls
                    self._token = trio.lowlevel.current_trio_token()
                    self._stop = trio.Event()
                    if self._stop_requested:          # stop() ran before there was a loop to tell
                        self._stop.set()
                    _settle(self.started, client)
                    await self._stop.wait()
                    calls.cancel_scope.cancel()

        try:
            trio.run(main)
        except BaseException as e:                    # reported to whoever waits for start or end
            self.error = _unwrap(e)
            _settle(self.started, error=self.error)
        finally:
            _settle(self.started, error=_lc().LedgerError("the client's event loop ended before it started"))
            _settle(self.finished)

    def call(self, name: str, args: tuple, fut: concurrent.futures.Future) -> trio.CancelScope:
        """Start ``client.<name>(*args)`` in the loop; its outcome goes to ``fut``. The scope
        returned is for ``cancel``."""
        scope = trio.CancelScope()
        if self._token is None:
            _settle(fut, error=_lc().LedgerError("the client is not running"))
            return scope
        try:
            self._token.run_sync_soon(self._spawn, scope, name, args, fut)
        except trio.RunFinishedError:
            _settle(fut, error=_closed())
        return scope

    def _spawn(self, scope: trio.CancelScope, name: str, args: tuple, fut: concurrent.futures.Future) -> None:
        try:
            assert self._calls is not None
            self._calls.start_soon(self._run, scope, name, args, fut)
        except RuntimeError:                          # the nursery is closed: the client is closing
            _settle(fut, error=_closed())

    async def _run(self, scope: trio.CancelScope, name: str, args: tuple, fut: concurrent.futures.Future) -> None:
        try:
            with scope:
                _settle(fut, await getattr(self.client, name)(*args))
        except Exception as e:                        # the caller's to handle, in the caller's thread
            _settle(fut, error=_unwrap(e))
        finally:                                      # cancelled by its caller (who no longer waits) or by close
            if not fut.done():
                _settle(fut, error=_lc().LedgerError("the call was cancelled") if scope.cancelled_caught
                        else _closed())

    def cancel(self, scope: trio.CancelScope) -> None:
        """Cancel one call (from any thread)."""
        if self._token is not None:
            try:
                self._token.run_sync_soon(scope.cancel)
            except trio.RunFinishedError:
                pass

    def stop(self) -> None:
        """Cancel every call, close the connections and end the loop; returns at once
        (``finished`` resolves, and the thread ends, soon after)."""
        self._stop_requested = True
        if self._token is not None and self._stop is not None:
            try:
                self._token.run_sync_soon(self._stop.set)
            except trio.RunFinishedError:
                pass


def _refuse_inside_event_loop(what: str) -> None:
    library = running_async_library()
    if library is not None:
        raise InsideEventLoop(
            f"{what} blocks until the ledger answers, so it cannot run inside the running {library} event loop "
            f"(it would stall every task of it): there, use the async client, 'async with "
            f"ledger.client.connect(DIR) as client: await client.{what.split('.')[-1].rstrip('()')}(...)', "
            f"or call the SyncClient from a worker thread")


def _coroutine_method(name: str) -> bool:
    return not name.startswith("_") and inspect.iscoroutinefunction(getattr(_lc().Client, name, None))


class _OnTrioThread:
    """What ``SyncClient`` and ``AsyncioClient`` share: the ``Client`` (on the trio thread)
    whose attributes they show, and any public coroutine method of it by name, handed over
    by the subclass's ``_call``."""

    _client: Client
    _call: Callable[..., Any]

    @property
    def cluster(self) -> Cluster:
        return self._client.cluster

    @property
    def id(self) -> int:
        return self._client.id

    @property
    def timeout(self) -> float | None:
        return self._client.timeout

    @timeout.setter
    def timeout(self, value: float | None) -> None:
        self._client.timeout = value

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if _coroutine_method(name):
            return functools.partial(self._call, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


class SyncClient(_OnTrioThread):
    """The blocking twin of ``connect``: the same methods, each returning when committed.

    A background thread runs the trio event loop with one ``Client``; calls from any
    thread are handed to it, so several threads may share one SyncClient. Inside a
    running event loop a call raises ``InsideEventLoop`` (use ``connect`` there). Use it
    as a context manager or call ``close()``."""

    def __init__(self, cluster_dir: str | os.PathLike[str], client: int | None = None, *,
                 timeout: float | None = DEFAULT_TIMEOUT) -> None:
        _lc()._resolve(cluster_dir, client)      # raise bad-cluster / bad-key errors here, in the caller
        self._closed = False
        self._host = TrioThread(cluster_dir, client, timeout)
        self._host.start()
        try:
            self._client: Client = self._host.started.result()
        except BaseException:                    # it could not start, or Ctrl-C while it started
            self._host.stop()
            raise

    def _call(self, name: str, *args: Any) -> Any:
        _refuse_inside_event_loop(f"SyncClient.{name}()")
        if self._closed:
            raise _lc().LedgerError("this SyncClient is closed")
        fut: concurrent.futures.Future = concurrent.futures.Future()
        scope = self._host.call(name, args, fut)
        try:
            return fut.result()
        except BaseException:
            if not fut.done():                   # interrupted while waiting (Ctrl-C): stop the call too
                self._host.cancel(scope)
            raise

    def put(self, key: str, value: bytes | str) -> Receipt:
        return self._call("put", key, value)

    def get(self, key: str, linearizable: bool = False) -> bytes | None:
        return self._call("get", key, linearizable)

    def get_verified(self, key: str, at_height: int | None = None) -> "ReadProof":
        return self._call("get_verified", key, at_height)

    def delete(self, key: str) -> Receipt:
        return self._call("delete", key)

    def cas(self, key: str, expected: bytes | str | None, new: bytes | str) -> Receipt:
        return self._call("cas", key, expected, new)

    def status(self, timeout: float = 2.0) -> list[dict]:
        return self._call("status", timeout)

    def transact(self, puts: dict | None = None, deletes: list | None = None, require: dict | None = None) -> Receipt:
        return self._call("transact", puts, deletes, require)

    def outcome(self, request: Any) -> Receipt:
        return self._call("outcome", request)

    def history(self, key: str, limit: int = 100, after: int | None = None) -> Any:
        return self._call("history", key, limit, after)

    def scan(self, prefix: str | None = None, start: str | None = None, end: str | None = None,
             at_height: int | None = None, limit: int = 1000, verified: bool = False) -> Any:
        return self._call("scan", prefix, start, end, at_height, limit, verified)

    def close(self) -> None:
        """Cancel what is in flight, close the connections and join the thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._host.stop()
        self._host.thread.join(timeout=JOIN_TIMEOUT)

    def __enter__(self) -> "SyncClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncioClient(_OnTrioThread):
    """``connect``'s client under asyncio: ``Client``'s methods, awaited on the asyncio loop,
    carried out by a ``Client`` on a trio loop in a thread of its own. Many tasks may use
    one at once; cancelling a task cancels its call."""

    def __init__(self, host: TrioThread, client: Client) -> None:
        self._host = host
        self._client = client

    async def _call(self, name: str, *args: Any) -> Any:
        import asyncio

        fut: concurrent.futures.Future = concurrent.futures.Future()
        scope = self._host.call(name, args, fut)
        try:
            return await asyncio.wrap_future(fut)
        except asyncio.CancelledError:
            self._host.cancel(scope)
            raise

    async def put(self, key: str, value: bytes | str) -> Receipt:
        return await self._call("put", key, value)

    async def get(self, key: str, linearizable: bool = False) -> bytes | None:
        return await self._call("get", key, linearizable)

    async def get_verified(self, key: str, at_height: int | None = None) -> "ReadProof":
        return await self._call("get_verified", key, at_height)

    async def delete(self, key: str) -> Receipt:
        return await self._call("delete", key)

    async def cas(self, key: str, expected: bytes | str | None, new: bytes | str) -> Receipt:
        return await self._call("cas", key, expected, new)

    async def transact(self, puts: dict | None = None, deletes: list | None = None,
                       require: dict | None = None) -> Receipt:
        return await self._call("transact", puts, deletes, require)

    async def outcome(self, request: Any) -> Receipt:
        return await self._call("outcome", request)

    async def status(self, timeout: float = 2.0) -> list[dict]:
        return await self._call("status", timeout)

    async def history(self, key: str, limit: int = 100, after: int | None = None) -> Any:
        return await self._call("history", key, limit, after)

    async def scan(self, prefix: str | None = None, start: str | None = None, end: str | None = None,
                   at_height: int | None = None, limit: int = 1000, verified: bool = False) -> Any:
        return await self._call("scan", prefix, start, end, at_height, limit, verified)


async def open_on_asyncio(cluster_dir: str | os.PathLike[str], client: int | None,
                          timeout: float | None) -> tuple[TrioThread, AsyncioClient]:
    """Start the trio thread and wait, without blocking the asyncio loop, for its client."""
    import asyncio

    _lc()._resolve(cluster_dir, client)          # bad-cluster / bad-key errors in the caller, at once
    host = TrioThread(cluster_dir, client, timeout)
    host.start()
    try:
        inner = await asyncio.wrap_future(host.started)
    except BaseException:                        # failed or cancelled while starting: leave no thread
        await close_on_asyncio(host, failing=True)
        raise
    return host, AsyncioClient(host, inner)


async def close_on_asyncio(host: TrioThread | None, *, failing: bool) -> None:
    """Stop the trio thread and wait, without blocking the asyncio loop, until it has ended;
    an error that ended its loop is raised unless the block is failing already."""
    import asyncio

    if host is None:
        return
    host.stop()
    await asyncio.shield(asyncio.wrap_future(host.finished))
    host.thread.join(timeout=JOIN_TIMEOUT)       # it has finished its work: this returns at once
    if host.error is not None and not failing:
        raise host.error


__all__ = ["SyncClient", "AsyncioClient", "InsideEventLoop", "TrioThread", "running_async_library", "DEFAULT_TIMEOUT"]

"""The baseline a user would pick instead: PySyncObj (Raft, crash faults, no signatures).

``node``: one PySyncObj replica of a replicated dict, plus a small TCP front end that
takes length-prefixed msgpack ``[id, key, value]`` puts and answers ``[id, ok]`` when
Raft has committed them. ``load``: the same closed loop as bench.loadgen (K puts in
flight, per-request latency) against that front end. PySyncObj keeps its log in memory
(no fsync), which favours it; the report says so.
"""
from __future__ import annotations

import argparse
import json
import socket
import struct
import sys
import threading
import time

import msgpack

_LEN = struct.Struct(">I")


def _node(a: argparse.Namespace) -> int:
    from pysyncobj import SyncObj, SyncObjConf, replicated

    class KV(SyncObj):
        def __init__(self, me: str, partners: list[str]) -> None:
            # a short tick so that commits are noticed promptly (the 50 ms default adds latency)
            super().__init__(me, partners, SyncObjConf(dynamicMembershipChange=False, autoTickPeriod=0.001,
                                                       appendEntriesPeriod=0.001))
            self._d: dict[str, bytes] = {}

        @replicated
        def put(self, k: str, v: bytes) -> bool:
            self._d[k] = v
            return True

    addrs = a.raft.split(",")
    kv = KV(addrs[a.id], [x for i, x in enumerate(addrs) if i != a.id])
    srv = socket.create_server(("127.0.0.1", a.port))

    def serve(conn: socket.socket) -> None:
        lock = threading.Lock()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        while True:
            data = conn.recv(65536)
            if not data:
                return
            buf += data
            while len(buf) >= 4:
                (n,) = _LEN.unpack_from(buf)
                if len(buf) < 4 + n:
                    break
                rid, k, v = msgpack.unpackb(buf[4:4 + n])
                buf = buf[4 + n:]

                def done(res, err, rid=rid) -> None:
                    body = msgpack.packb([rid, err == 0])
                    with lock:
                        conn.sendall(_LEN.pack(len(body)) + body)
                kv.put(k, v, callback=done)

    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def _load(a: argparse.Namespace) -> int:
    import trio

    async def run() -> dict:
        stream = None
        for _ in range(100):
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", a.port)
                break
            except OSError:
                await trio.sleep(0.1)
        waiters: dict[int, trio.Event] = {}
        ok: dict[int, bool] = {}
        done: list[tuple[float, float]] = []
        start = time.perf_counter()
        end = start + a.duration
        value = b"v" * a.value_bytes

        async def reader() -> None:
            buf = b""
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    return
                buf += data
                while len(buf) >= 4:
                    (n,) = _LEN.unpack_from(buf)
                    if len(buf) < 4 + n:
                        break
                    rid, good = msgpack.unpackb(buf[4:4 + n])
                    buf = buf[4 + n:]
                    ok[rid] = good
                    ev = waiters.pop(rid, None)
                    if ev is not None:
                        ev.set()

        counter = 0
        send_lock = trio.Lock()

        async def worker(w: int) -> None:
            nonlocal counter
            while time.perf_counter() < end:
                counter += 1
                rid = counter
                ev = waiters[rid] = trio.Event()
                body = msgpack.packb([rid, f"w{w}k{rid % 64}", value])
                t0 = time.perf_counter()
                async with send_lock:
                    await stream.send_all(_LEN.pack(len(body)) + body)
                with trio.move_on_after(5):
                    await ev.wait()
                t1 = time.perf_counter()
                if ok.pop(rid, False):
                    done.append((t1 - start, (t1 - t0) * 1000.0))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            async with trio.open_nursery() as workers:
                for w in range(a.in_flight):
                    workers.start_soon(worker, w)
            nursery.cancel_scope.cancel()
        return {"completed": done, "errors": 0}

    res = trio.run(run)
    with open(a.out, "w") as fh:
        json.dump(res, fh)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.pysyncobj_baseline", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    n = sub.add_parser("node")
    n.add_argument("--id", type=int, required=True)
    n.add_argument("--raft", required=True, help="comma-separated host:port of every Raft node")
    n.add_argument("--port", type=int, required=True, help="front-end port for the load generator")
    ld = sub.add_parser("load")
    ld.add_argument("--port", type=int, required=True)
    ld.add_argument("--in-flight", type=int, default=16)
    ld.add_argument("--duration", type=float, default=5.0)
    ld.add_argument("--value-bytes", type=int, default=64)
    ld.add_argument("--out", required=True)
    a = p.parse_args(argv)
    return _node(a) if a.cmd == "node" else _load(a)


if __name__ == "__main__":
    sys.exit(main())

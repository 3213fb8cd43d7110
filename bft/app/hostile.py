"""Hostile-client tools: what an ordinary client, or someone with no key at all, can throw at
a replica. Used by the tests that show each one bounded, and meant for courses (run them
against your own cluster on 127.0.0.1 and watch ``bftledger status --json``).

Each tool returns what it holds open (the caller closes it) or a count, and never waits
for the cluster's answers: an attacker does not.
"""
from __future__ import annotations

import time

import trio

from ledger.net.channel import ROLE_CLIENT, ROLE_REPLICA, channels_for
from ledger.wire import MAX_OP, Request, frame
from ledger.cluster import Cluster
from ledger.state import op_put

__all__ = ["largest_value", "idle_sockets", "authenticated", "partial_frames", "flood_requests", "bad_signatures",
           "splice"]


def largest_value(key: str) -> bytes:
    """The largest value a put of ``key`` may carry (the operation is at most MAX_OP bytes)."""
    return b"\xff" * (MAX_OP - len(op_put(key, b"")) - 8)


async def _tcp(cluster: Cluster, replica: int) -> trio.SocketStream:
    r = cluster.replicas[replica]
    return await trio.open_tcp_stream(r.host, r.port)


async def idle_sockets(cluster: Cluster, replica: int, count: int) -> list[trio.SocketStream]:
    """``count`` TCP connections that never send a byte (no key needed)."""
    return [await _tcp(cluster, replica) for _ in range(count)]


async def authenticated(cluster: Cluster, replica: int, client: int) -> trio.abc.Stream:
    """A connection that passed the channel's handshake as ``client`` (an ordinary client key)."""
    ch = channels_for(cluster, ROLE_CLIENT, client, cluster.load_client_key(client))
    _, _, stream, _ = await ch.dial(await _tcp(cluster, replica), (ROLE_REPLICA, replica))
    return stream


async def partial_frames(cluster: Cluster, replica: int, client: int, count: int,
                         declared: int = 200 * 1024) -> list[trio.abc.Stream]:
    """``count`` authenticated connections that each announce a ``declared``-byte frame, send
    half of it and stall, to make the replica hold buffers."""
    out = []
    for _ in range(count):
        s = await authenticated(cluster, replica, client)
        await s.send_all(declared.to_bytes(4, "big") + b"\x00" * (declared // 2))
        out.append(s)
    return out


async def flood_requests(cluster: Cluster, replica: int, client: int, count: int, *, value: bytes | None = None,
                         between=None) -> int:
    """Send ``count`` validly signed puts of the largest size to one replica as fast as the link
    takes them, without waiting for replies; ``between(i)`` (async) runs every 250 requests."""
    signer = cluster.load_client_key(client)
    s = await authenticated(cluster, replica, client)
    ts0 = time.time_ns() // 1000
    try:
        for i in range(count):
            key = f"flood-{i:06d}"
            req = Request(client, ts0 + i, op_put(key, value if value is not None else largest_value(key)))
            await s.send_all(frame(req.signed(signer).encode()))
            if between is not None and i % 250 == 249:
                await between(i)
    finally:
        await trio.aclose_forcefully(s)
    return count


async def bad_signatures(cluster: Cluster, replica: int, client: int, seconds: float) -> int:
    """For ``seconds``, send requests whose signatures are garbage over ``client``'s own
    authenticated connection, as fast as the replica reads them; returns how many went out.
    (The replica blacklists the client and stops reading it: sends then block.)"""
    s = await authenticated(cluster, replica, client)
    ts0 = time.time_ns() // 1000
    sent = 0
    with trio.move_on_after(seconds):
        try:
            while True:
                req = Request(client, ts0 + sent, op_put(f"bad-{sent}", b"x"), bytes(64))
                await s.send_all(frame(req.encode()))
                sent += 1
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
    await trio.aclose_forcefully(s)
    return sent


async def splice(x: trio.abc.Stream, y: trio.abc.Stream, seconds: float) -> None:
    """The man in the middle of a reflection attack: copy bytes both ways between two
    connections (to two replicas, each handed the other's handshake) for ``seconds``."""
    async def pump(src: trio.abc.Stream, dst: trio.abc.Stream) -> None:
        try:
            while True:
                data = await src.receive_some(65536)
                if not data:
                    return
                await dst.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return

    with trio.move_on_after(seconds):
        async with trio.open_nursery() as n:
            n.start_soon(pump, x, y)
            n.start_soon(pump, y, x)

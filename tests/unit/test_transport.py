"""The transport's pieces without sockets: handshake, framing limits, bounded queues."""
from __future__ import annotations

import pytest
import trio
import trio.testing

from bft.runtime.transport import (HANDSHAKE_MAX_FRAME, ROLE_CLIENT, ROLE_REPLICA, Connection, HandshakeError,
                                   Identity, KeyBook, Problems, SendQueue, handshake)
from bft.wire import FrameDecoder, Hello, StatusRequest, decode, frame
from crypto import keys
from crypto.signing import Ed25519Verifier


@pytest.fixture
def book():
    replicas = [keys.generate() for _ in range(4)]
    clients = [keys.generate() for _ in range(2)]
    kb = KeyBook([s.public_key for s in replicas], [s.public_key for s in clients], Ed25519Verifier())
    return kb, replicas, clients


async def test_mutual_handshake_and_bytes_that_follow(book) -> None:
    kb, replicas, clients = book
    a, b = trio.testing.memory_stream_pair()
    got = {}

    async def replica_side() -> None:
        got["replica"] = await handshake(a, Identity(ROLE_REPLICA, 2, replicas[2]), kb)

    async def client_side() -> None:
        got["client"] = await handshake(b, Identity(ROLE_CLIENT, 1, clients[1]), kb, expect=(ROLE_REPLICA, 2))
        await b.send_all(frame(StatusRequest(5).encode()) * 3)     # at once, maybe with the Auth

    async with trio.open_nursery() as n:
        n.start_soon(replica_side)
        n.start_soon(client_side)
    assert got["client"][:2] == (ROLE_REPLICA, 2)
    role, ident, leftover = got["replica"]
    assert (role, ident) == (ROLE_CLIENT, 1)
    dec = FrameDecoder()
    bodies = dec.feed(leftover)
    while len(bodies) < 3:
        bodies += dec.feed(await a.receive_some(4096))
    assert [decode(x) for x in bodies] == [StatusRequest(5)] * 3


@pytest.mark.parametrize("case", ["wrong key", "unknown id", "wrong peer", "oversized", "not hello"])
async def test_handshake_refusals(book, case: str) -> None:
    kb, replicas, clients = book
    a, b = trio.testing.memory_stream_pair()
    if case == "wrong key":
        me, expect = Identity(ROLE_CLIENT, 0, keys.generate()), None
    elif case == "unknown id":
        me, expect = Identity(ROLE_CLIENT, 9, clients[0]), None
    else:
        me, expect = Identity(ROLE_REPLICA, 1, replicas[1]), None
    if case == "wrong peer":
        expect = (ROLE_REPLICA, 3)

    async def peer() -> None:
        if case == "oversized":
            await b.send_all(b"\x7f\xff\xff\xff")
        elif case == "not hello":
            await b.send_all(frame(StatusRequest(1).encode()))
        else:
            try:
                await handshake(b, me, kb)
            except (HandshakeError, trio.BrokenResourceError):
                pass

    victim_me = Identity(ROLE_REPLICA, 0, replicas[0])
    errors: list[HandshakeError] = []

    async def victim() -> None:
        try:
            with trio.fail_after(5):
                await handshake(a, victim_me, kb, expect=expect if case == "wrong peer" else None)
        except HandshakeError as e:
            errors.append(e)
        await a.aclose()

    async with trio.open_nursery() as n:
        n.start_soon(peer)
        n.start_soon(victim)
    assert len(errors) == 1
    kinds = {"wrong key": "bad signature", "unknown id": "not in cluster.toml", "wrong peer": "not who we dialled",
             "oversized": "oversized", "not hello": "unexpected message"}
    assert kinds[case] in errors[0].kind


def test_send_queue_drops_oldest_and_coalesces() -> None:
    q = SendQueue("test", max_bytes=100, max_frames=5)
    for i in range(8):
        q.put(bytes([i]) * 10)
    assert len(q) == 5 and q.dropped == 3 and q.nbytes == 50

    async def take() -> bytes:
        return await q.take()

    data = trio.run(take)
    assert data == b"".join(bytes([i]) * 10 for i in range(3, 8))
    assert len(q) == 0 and q.sent_frames == 5
    q.put(b"x" * 200)                              # one frame above the byte cap is still sent
    assert len(q) == 1


async def test_connection_closes_on_an_oversized_frame_and_hands_over_bursts() -> None:
    a, b = trio.testing.memory_stream_pair()
    seen: list[int] = []
    problems = Problems()

    def on_frames(conn, bodies) -> bool:
        seen.append(len(bodies))
        return True

    conn = Connection(a, ROLE_CLIENT, 0, SendQueue("c"), FrameDecoder(1024))
    async with trio.open_nursery() as n:
        n.start_soon(conn.run, frame(Hello(b"\x00" * 32).encode()), on_frames, problems)
        await b.send_all(frame(b"\x01" * 10) * 300)
        await trio.testing.wait_all_tasks_blocked()
        await b.send_all((2048).to_bytes(4, "big") + b"x")
        with trio.fail_after(5):
            while not conn.closed:
                await trio.sleep(0.01)
    assert seen[0] == 1 and sum(seen[1:]) == 300 and max(seen) <= 128
    assert problems.counts["oversized frame"] == 1
    assert HANDSHAKE_MAX_FRAME < 1024

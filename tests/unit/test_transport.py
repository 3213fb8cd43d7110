"""The transport's pieces without sockets: framing limits, bounded queues (handshakes: test_channel.py)."""
from __future__ import annotations

import trio
import trio.testing

from ledger.net.channel import HANDSHAKE_MAX_FRAME
from ledger.net.transport import ROLE_CLIENT, Connection, Problems, SendQueue
from bft.wire import FrameDecoder, Hello, frame
from ledger.rules import WireRule


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
    assert problems.counts[WireRule.OVERSIZED_FRAME] == 1
    assert HANDSHAKE_MAX_FRAME < 1024

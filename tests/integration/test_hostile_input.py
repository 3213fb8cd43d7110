"""Hostile bytes at a live replica's port: it drops the connection (or the message), counts
it, and keeps serving puts. Never a crash."""
from __future__ import annotations
import random
import ssl

import trio

import ledger.client
from ledger.net.channel import ROLE_CLIENT, ROLE_REPLICA, channels_for
from bft.wire import FrameDecoder, PrePrepare, Request, StatusRequest, StatusResponse, decode, frame
from crypto import keys, tls
from ledger.state import op_put
from bft.rules import RequestRule, StepRule
from ledger.rules import WireRule
from tests.integration.workload import dropped


async def _connect(lc, replica: int = 0) -> trio.SocketStream:
    r = lc.cluster.replicas[replica]
    return await trio.open_tcp_stream(r.host, r.port)


async def _closed_by_peer(stream: trio.SocketStream, timeout: float = 10.0) -> bool:
    """True once the replica closes the connection (anything it sends first is read and ignored)."""
    with trio.move_on_after(timeout):
        try:
            while await stream.receive_some(65536):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        return True
    return False


async def _put_works(lc, key: str) -> None:
    async with ledger.client.connect(lc.directory, timeout=20) as c:
        r = await c.put(key, b"still serving")
        assert r.ok
        assert await c.get(key) == b"still serving"


async def _status(lc, replica: int = 0) -> dict:
    st = await lc.status()
    assert st[replica]["reachable"], st[replica]
    return st[replica]


async def _authenticated(lc, replica: int, client: int = 3) -> trio.abc.Stream:
    """A connection to ``replica`` that has passed the channel's handshake as ``client``."""
    cluster = lc.cluster
    channels = channels_for(cluster, ROLE_CLIENT, client, cluster.load_client_key(client))
    with trio.fail_after(5):
        _, _, stream, _ = await channels.dial(await _connect(lc, replica), (ROLE_REPLICA, replica))
    return stream


async def test_garbage_oversized_and_unauthenticated_input(running_pbft, tmp_path) -> None:
    lc = running_pbft
    rng = random.Random(7)

    s = await _connect(lc)                               # random bytes
    await s.send_all(rng.randbytes(64 * 1024))
    assert await _closed_by_peer(s)
    await s.aclose()

    s = await _connect(lc)                               # a 4 GiB length prefix
    await s.send_all(b"\xff\xff\xff\xff" + b"x" * 1000)
    assert await _closed_by_peer(s)
    await s.aclose()

    s = await _connect(lc)                               # a valid message, but no handshake
    await s.send_all(frame(StatusRequest(1).encode()))
    assert await _closed_by_peer(s)
    await s.aclose()

    s = await _connect(lc)                               # TLS with a key that cluster.toml does not pin
    impostor = keys.generate()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    fake = tmp_path / "impostor.pem"
    fake.write_bytes(tls.make_certificate(impostor.seed, "bftledger client 0") + tls.private_key_pem(impostor.seed))
    ctx.load_cert_chain(fake)
    t = trio.SSLStream(s, ctx)
    try:
        await t.do_handshake()                           # TLS 1.3: the server judges the client's cert after this
        assert await _closed_by_peer(t)
    except trio.BrokenResourceError:
        pass
    await trio.aclose_forcefully(t)

    s = await _authenticated(lc, 0)                      # authenticated, then a 4 GiB length prefix
    await s.send_all(b"\xff\xff\xff\xff" + b"x" * 1000)
    assert await _closed_by_peer(s)
    await trio.aclose_forcefully(s)

    half = []                                            # half a frame, then silence (kept open)
    for _ in range(5):
        s = await _connect(lc)
        await s.send_all(b"\x00\x00\x10\x00" + b"y" * 100)
        half.append(s)
    try:
        await _put_works(lc, "after-garbage")
    finally:
        for s in half:
            await s.aclose()
    st = await _status(lc)
    problems = st["transport_problems"]
    assert problems.get(WireRule.OVERSIZED_FRAME.label, 0) > 0, problems          # the 4 GiB prefix
    assert problems.get(WireRule.TLS_FAILED.label, 0) > 0, problems
    assert st["internal_errors"] == 0


async def test_flood_of_badly_signed_messages(running_pbft) -> None:
    """Protocol messages a client may not send are read and dropped, counted; requests with
    garbage signatures blacklist their client (issue 12): after a burst of 8 checks its
    connections are not read for 10 s, so a flood of 3,000 costs 8 or so signature checks."""
    lc = running_pbft
    s = await _authenticated(lc, 1)                      # an authenticated, but malicious, client
    rng = random.Random(3)
    frames = []
    for i in range(300):                                 # protocol messages a client may not send
        pp = PrePrepare(0, i + 1, rng.randbytes(32), [], 0, rng.randbytes(64))
        frames.append(frame(pp.encode()))
    await s.send_all(b"".join(frames))
    await s.send_all(frame(StatusRequest(99).encode()))  # answered after the flood: it was all read
    dec = FrameDecoder()
    with trio.fail_after(30):
        got = None
        while got is None:
            for body in dec.feed(await s.receive_some(65536)):
                m = decode(body)
                if type(m) is StatusResponse and m.nonce == 99:
                    got = m
    await s.send_all(frame(rng.randbytes(300)))       # then a frame that is not a message at all
    assert await _closed_by_peer(s)
    await trio.aclose_forcefully(s)

    s = await _authenticated(lc, 1)
    bad = [frame(Request(3, 10**15 + i, op_put(f"flood-{i}", b"x"), rng.randbytes(64)).encode()) for i in range(3000)]
    with trio.move_on_after(5):                          # blacklisted: the replica stops reading, sends block
        await s.send_all(b"".join(bad))
    await trio.aclose_forcefully(s)
    await _put_works(lc, "after-flood")
    st = await _status(lc, 1)
    assert 8 <= dropped(st, RequestRule.BAD_CLIENT_SIGNATURE) <= 16, st["dropped"]
    assert dropped(st, StepRule.CLIENT_SENT_PROTOCOL) >= 300, st["dropped"]
    assert st["dropped"][StepRule.CLIENT_SENT_PROTOCOL.label]["by_sender"]       # names the client
    assert st["throttled"]["clients_blacklisted"] >= 1 and st["throttled"]["blacklisted_frames_dropped"] >= 1
    assert st["internal_errors"] == 0
    assert sorted(lc.alive()) == [0, 1, 2, 3]

"""Authenticated channels over in-memory streams: mutual TLS 1.3 and the plaintext handshake.

The attacks of issue 10 at the lowest level: handshake reflection (an attacker with no
key splices two replicas' connections together), relaying an Auth to another node, a
node with a key of another cluster, and a peer that is not the one dialled."""
from __future__ import annotations

from pathlib import Path

import pytest
import trio

from ledger.rules import WireRule as W
import trio.testing

from bft.app import hostile
from bft.app.clusterinit import init_cluster
from ledger.net.channel import (DIALLER, HANDSHAKE_MAX_FRAME, ROLE_CLIENT, ROLE_REPLICA, HandshakeError,
                                 PlaintextChannels, TlsChannels, channels_for)
from bft.wire import Auth, FrameDecoder, Hello, StatusRequest, decode, frame
from crypto import keys
from ledger import cluster as clustermod


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls") / "c"
    return init_cluster(d, "pbft", 1, clients=2)


@pytest.fixture(scope="module")
def plain_cluster(tmp_path_factory):
    d = tmp_path_factory.mktemp("plain") / "c"
    return init_cluster(d, "pbft", 1, clients=2, insecure_plaintext=True)


def replica(c, i):
    return channels_for(c, ROLE_REPLICA, i, c.load_replica_key(i))


def client(c, i):
    return channels_for(c, ROLE_CLIENT, i, c.load_client_key(i))


async def _pair(acceptor, dialler, expect, timeout: float = 5.0):
    """Run accept and dial on two ends of one in-memory stream; each result or its HandshakeError."""
    a, b = trio.testing.memory_stream_pair()
    out: dict = {}

    async def side(name, coro):
        try:
            with trio.fail_after(timeout):
                out[name] = await coro
        except (HandshakeError, trio.TooSlowError, trio.BrokenResourceError) as e:
            out[name] = e
            await trio.aclose_forcefully(a if name == "accept" else b)

    async with trio.open_nursery() as n:
        n.start_soon(side, "accept", acceptor.accept(a))
        n.start_soon(side, "dial", dialler.dial(b, expect))
    return out


@pytest.mark.parametrize("which", ["tls", "plain"])
async def test_mutual_handshake_proves_both_ends_and_frames_flow(which, tls_cluster, plain_cluster) -> None:
    c = tls_cluster if which == "tls" else plain_cluster
    rep, cl = replica(c, 2), client(c, 1)
    assert isinstance(rep, TlsChannels if which == "tls" else PlaintextChannels)
    out = await _pair(rep, cl, (ROLE_REPLICA, 2))
    role, ident, s_rep, left_rep = out["accept"]
    assert (role, ident) == (ROLE_CLIENT, 1)
    assert out["dial"][:2] == (ROLE_REPLICA, 2)
    s_cl = out["dial"][2]
    await s_cl.send_all(frame(StatusRequest(5).encode()) * 3)
    dec = FrameDecoder()
    bodies = dec.feed(left_rep)
    while len(bodies) < 3:
        bodies += dec.feed(await s_rep.receive_some(4096))
    assert [decode(x) for x in bodies] == [StatusRequest(5)] * 3


@pytest.mark.parametrize("which", ["tls", "plain"])
async def test_a_peer_that_is_not_the_one_dialled_is_refused(which, tls_cluster, plain_cluster) -> None:
    c = tls_cluster if which == "tls" else plain_cluster
    out = await _pair(replica(c, 2), replica(c, 0), (ROLE_REPLICA, 3))
    assert isinstance(out["dial"], HandshakeError)
    assert "not who we dialled" in str(out["dial"]) or "meant for another node" in str(out["accept"])


@pytest.mark.parametrize("which", ["tls", "plain"])
async def test_a_node_of_another_cluster_is_refused(which, tmp_path: Path) -> None:
    plain = which == "plain"
    mine = init_cluster(tmp_path / "mine", "pbft", 1, clients=1, insecure_plaintext=plain)
    other = init_cluster(tmp_path / "other", "pbft", 1, clients=1, insecure_plaintext=plain)
    out = await _pair(replica(mine, 0), client(other, 0), (ROLE_REPLICA, 0))
    assert isinstance(out["accept"], HandshakeError), out
    assert isinstance(out["dial"], (HandshakeError, trio.BrokenResourceError)), out


@pytest.mark.parametrize("which", ["tls", "plain"])
async def test_handshake_reflection_fails(which, tls_cluster, plain_cluster) -> None:
    """Two replicas each accept a connection from the attacker, who hands each one's handshake
    to the other (the confirmed attack of issue 10): neither may accept the other."""
    c = tls_cluster if which == "tls" else plain_cluster
    a_rep, b_rep = replica(c, 0), replica(c, 1)
    a_in, a_att = trio.testing.memory_stream_pair()
    b_in, b_att = trio.testing.memory_stream_pair()
    results: dict = {}

    async def accept(name, ch, stream):
        try:
            with trio.fail_after(1.0):
                results[name] = await ch.accept(stream)
        except (HandshakeError, trio.TooSlowError, trio.BrokenResourceError) as e:
            results[name] = e
        await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as n:
        n.start_soon(accept, "a", a_rep, a_in)
        n.start_soon(accept, "b", b_rep, b_in)
        n.start_soon(hostile.splice, a_att, b_att, 1.5)
    assert not isinstance(results["a"], tuple) and not isinstance(results["b"], tuple), results


async def _hello_of(stream) -> Hello:
    """The Hello a listener sends first (its nonce is what an Auth must name)."""
    dec = FrameDecoder(HANDSHAKE_MAX_FRAME)
    got = []
    while not got:
        got = dec.feed(await stream.receive_some(4096))
    return decode(got[0])


async def _refusals(victim, stream, attacker) -> list[HandshakeError]:
    """Run ``victim.accept(stream)`` against ``attacker()``; the HandshakeErrors it raised."""
    errors: list[HandshakeError] = []

    async def accept() -> None:
        try:
            with trio.fail_after(5):
                await victim.accept(stream)
        except HandshakeError as e:
            errors.append(e)

    async with trio.open_nursery() as n:
        n.start_soon(accept)
        n.start_soon(attacker)
    return errors


async def test_an_auth_relayed_to_another_replica_is_refused(plain_cluster) -> None:
    """Replica 0's Auth for replica 1, replayed to replica 2 on a fresh connection: refused
    (it names its verifier and both nonces)."""
    c = plain_cluster
    victim = replica(c, 2)
    a, b = trio.testing.memory_stream_pair()
    signer = c.load_replica_key(0)

    async def attacker() -> None:
        await b.send_all(frame(Hello(b"\x01" * 32).encode()))
        their = await _hello_of(b)
        # a genuine Auth of replica 0, as it would dial replica 1 -- not replica 2
        auth = Auth(ROLE_REPLICA, 0, ROLE_REPLICA, 1, DIALLER, b"\x01" * 32, their.nonce).signed(signer)
        await b.send_all(frame(auth.encode()))

    err = await _refusals(victim, a, attacker)
    assert err and "meant for another node" in str(err[0])


@pytest.mark.parametrize("case", ["wrong key", "unknown id", "oversized", "not hello", "reflected direction"])
async def test_plaintext_handshake_refusals(plain_cluster, case: str) -> None:
    c = plain_cluster
    victim = replica(c, 0)
    a, b = trio.testing.memory_stream_pair()
    if case == "wrong key":
        signer, ident = keys.generate().bound(c.cluster_id), 0
    elif case == "unknown id":
        signer, ident = c.load_client_key(0), 9
    else:
        signer, ident = c.load_client_key(0), 0

    async def peer() -> None:
        if case == "oversized":
            await b.send_all(b"\x7f\xff\xff\xff")
            return
        if case == "not hello":
            await b.send_all(frame(StatusRequest(1).encode()))
            return
        await b.send_all(frame(Hello(b"\x02" * 32).encode()))
        their = await _hello_of(b)
        direction = 1 if case == "reflected direction" else DIALLER
        await b.send_all(frame(Auth(ROLE_CLIENT, ident, ROLE_REPLICA, 0, direction, b"\x02" * 32,
                                    their.nonce).signed(signer).encode()))

    errors = await _refusals(victim, a, peer)
    rules = {"wrong key": W.HANDSHAKE_SIGNATURE, "unknown id": W.UNKNOWN_IDENTITY, "oversized": W.HANDSHAKE_OVERSIZED,
             "not hello": W.HANDSHAKE_UNEXPECTED, "reflected direction": W.REFLECTED}
    assert len(errors) == 1 and errors[0].rule is rules[case]


def test_missing_or_swapped_certificates_give_one_clear_error(tmp_path: Path) -> None:
    c = init_cluster(tmp_path / "c", "pbft", 1, clients=2)
    swapped = c.cert_path("replica", 1).read_bytes()
    c.cert_path("replica", 2).write_bytes(swapped)
    with pytest.raises(clustermod.ClusterError, match="replica-2.pem is not replica 2's certificate"):
        replica(c, 0)
    c.cert_path("replica", 2).unlink()
    with pytest.raises(clustermod.ClusterError, match="replica-2.pem is missing"):
        client(c, 0)

"""Creating a cluster directory: keys, ports, ``cluster.toml``, an empty ``data/``.

Kept apart from the CLI so that tests, the demo and the benchmark make clusters the
same way the user does.
"""
from __future__ import annotations

import errno
import fcntl
import os
import random
import re
import shutil
import socket
from pathlib import Path

from crypto import keys, tls
from ledger import cluster as clustermod
from ledger.cluster import MODES, TRANSPORT_PLAINTEXT, TRANSPORT_TLS, Cluster, required_n

# Ports above 32767 are in Linux's default ephemeral range, where the kernel may hand a
# port to any outgoing connection just before a replica wants to listen on it.
PORT_LOW = 20000
PORT_HIGH = 32767
MAX_F = 100
MAX_CLIENTS = 10_000
_HOST_RE = re.compile(r"[A-Za-z0-9.\-:]{1,253}")


class InitError(Exception):
    """``init`` cannot proceed (busy port, existing cluster, running replica): one line for the user."""


def port_problem(host: str, port: int) -> str | None:
    """Why a replica could not listen on host:port right now, or None.

    Binds the way the replica will (SO_REUSEADDR), so a port held by a listener is busy
    but one lingering in TIME_WAIT is not."""
    if not 1 <= port <= 65535:
        return f"port {port} is outside 1..65535"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        return f"host {host!r} does not resolve ({e.strerror})"
    family, kind, proto, _, addr = infos[0]
    s = socket.socket(family, kind, proto)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(addr)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            return f"port {port} on {host} is already in use"
        if e.errno == errno.EACCES:
            return f"port {port} on {host} needs privileges to bind (pick one in 1024..{PORT_HIGH})"
        if e.errno == errno.EADDRNOTAVAIL:
            return f"{host} is not an address of this machine"
        return f"cannot bind {host}:{port}: {e.strerror}"
    finally:
        s.close()
    return None


def free_ports(host: str, count: int, rng: random.Random | None = None) -> list[int]:
    """``count`` distinct ports in PORT_LOW..PORT_HIGH that are bindable now.

    The OS only hands out free ports from its ephemeral range (above 32767 here), so
    candidates are drawn at random below it and each one is test-bound."""
    rng = rng or random.Random()
    chosen: list[int] = []
    tried: set[int] = set()
    while len(chosen) < count:
        if len(tried) >= min(PORT_HIGH - PORT_LOW + 1, 50 * count + 100):
            raise InitError(f"could not find {count} free ports in {PORT_LOW}..{PORT_HIGH} on {host}; "
                            "pass --base-port")
        p = rng.randint(PORT_LOW, PORT_HIGH)
        if p in tried:
            continue
        tried.add(p)
        why = port_problem(host, p)
        if why is None:
            chosen.append(p)
        elif "not an address" in why or "does not resolve" in why:
            raise InitError(why)
    return chosen


def _running_replica(data: Path) -> str | None:
    """The data directory of a replica that holds its store lock (is running), if any."""
    if not data.is_dir():
        return None
    for d in sorted(data.glob("replica-*")):
        lock = d / "LOCK"
        if not lock.is_file():
            continue
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError:
            return d.name
        finally:
            os.close(fd)
    return None


def _existing_cluster(d: Path) -> str | None:
    if (d / "cluster.toml").exists():
        return f"{d / 'cluster.toml'} already exists"
    if any((d / "keys").glob("*.key")):
        return f"{d / 'keys'} already holds key files"
    data = d / "data"
    if data.is_dir() and any(p.is_dir() and any(p.iterdir()) for p in data.glob("replica-*")):
        return f"{data} already holds ledgers"
    return None


def init_cluster(directory: str | os.PathLike[str], mode: str, f: int, *, clients: int = 4,
                 base_port: int | None = None, host: str = "127.0.0.1", force: bool = False,
                 insecure_plaintext: bool = False) -> Cluster:
    """Create a cluster of ``required_n(mode, f)`` replicas and ``clients`` client keys.

    Every node gets a TLS certificate over its identity key (``crypto.tls``); links are
    mutual TLS 1.3 unless ``insecure_plaintext``, which is for teaching and for measuring
    what the channel costs, never for a ledger that matters.

    With ``force``, an existing cluster in ``directory`` is replaced: its keys and its
    ledgers under ``data/`` are deleted, because blocks signed by the old keys could
    never verify against the new ones. Refuses while one of its replicas is running.
    """
    if mode not in MODES:
        raise InitError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if type(f) is not int or not 1 <= f <= MAX_F:
        raise InitError(f"f must be an integer in 1..{MAX_F}, not {f!r}")
    if type(clients) is not int or not 1 <= clients <= MAX_CLIENTS:
        raise InitError(f"--clients must be in 1..{MAX_CLIENTS}, not {clients!r}")
    if not _HOST_RE.fullmatch(host):
        raise InitError(f"host {host!r} is not a hostname or IP address")
    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise InitError(f"{d} exists and is not a directory")
    n = required_n(mode, f)
    if base_port is None:
        ports = free_ports(host, n)
    else:
        ports = list(range(base_port, base_port + n))
        if base_port < 1 or ports[-1] > 65535:
            raise InitError(f"ports {base_port}..{base_port + n - 1} for {n} replicas are outside 1..65535")
        for p in ports:
            why = port_problem(host, p)
            if why is not None:
                raise InitError(f"{why}; choose another --base-port or leave it out to pick free ports")

    existing = _existing_cluster(d)
    if existing and not force:
        raise InitError(f"{existing}; pass --force to replace the cluster (new keys, old ledgers deleted)")
    try:
        return _create(d, mode, f, n, ports, host, clients, replace=bool(existing),
                       transport=TRANSPORT_PLAINTEXT if insecure_plaintext else TRANSPORT_TLS)
    except OSError as e:
        where = f" ({e.filename})" if e.filename and str(e.filename) != str(d) else ""
        raise InitError(f"cannot create the cluster in {d}: {e.strerror or e}{where}") from None


def _create(d: Path, mode: str, f: int, n: int, ports: list[int], host: str, clients: int, *,
            replace: bool, transport: str) -> Cluster:
    if replace:
        running = _running_replica(d / "data")
        if running:
            raise InitError(f"{running} of {d} is running; stop the cluster before 'init --force'")
        for old in list((d / "keys").glob("replica-*.key")) + list((d / "keys").glob("client-*.key")):
            old.unlink()
        for old in (d / "data").glob("replica-*"):
            if old.is_dir():
                shutil.rmtree(old)
        for old in (d / "certs").glob("*.pem"):
            old.unlink()

    d.mkdir(parents=True, exist_ok=True)
    keydir = d / "keys"
    keydir.mkdir(mode=0o700, exist_ok=True)
    os.chmod(keydir, 0o700)
    replica_signers = [keys.generate() for _ in range(n)]
    client_signers = [keys.generate() for _ in range(clients)]
    for i, s in enumerate(replica_signers):
        keys.save(s, keydir / f"replica-{i}.key")
    for i, s in enumerate(client_signers):
        keys.save(s, keydir / f"client-{i}.key")
    write_certificates(d, "replica", replica_signers)
    write_certificates(d, "client", client_signers)
    (d / "data").mkdir(exist_ok=True)
    # cluster.toml last: a directory with it is a complete cluster, even after a crash mid-init.
    clustermod.write(d, mode, f, [(host, p) for p in ports], [s.public_key for s in replica_signers],
                     [s.public_key for s in client_signers], genesis_nonce=os.urandom(32), transport=transport)
    return clustermod.load(d)


def write_certificates(d: Path, role: str, signers: list, first: int = 0) -> None:
    """``DIR/certs/ROLE-I.pem``: each node's self-signed TLS certificate (public material)."""
    certdir = d / "certs"
    certdir.mkdir(exist_ok=True)
    for i, s in enumerate(signers, start=first):
        (certdir / f"{role}-{i}.pem").write_bytes(tls.make_certificate(s.seed, f"bftledger {role} {i}"))


def ephemeral_range() -> tuple[int, int] | None:
    """The kernel's ephemeral port range (Linux), to warn about ports inside it."""
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return None

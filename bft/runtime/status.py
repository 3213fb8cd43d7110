"""A running replica's status: what ``bftledger status`` and the tests read.

The core's own status (view, height, drops by rule and sender) with the runtime's
connections, traffic, channel problems by rule, budgets and throttling around it.
"""
from __future__ import annotations

import os

import msgpack
import trio

from bft.runtime import factory
from ledger.net.transport import ROLE_CLIENT, ROLE_REPLICA

STATUS_MAX_BYTES = 60_000          # one StatusResponse frame


def replica_status(rep) -> dict:
    st = dict(rep.core.status())
    links = rep.links.values()
    client_conns = [c for cs in rep.clients.values() for c in cs]
    queues = [link.queue for link in links] + [c.queue for c in client_conns]
    st.update({
        "id": rep.id, "pid": os.getpid(), "mode": rep.cluster.mode, "byzantine": rep.byzantine,
        "uptime": round(trio.current_time() - rep.started, 3),
        "peers_connected": sorted(r for r, link in rep.links.items() if link.connected),
        "clients_connected": len(rep.clients),
        "msgs_in": rep.msgs_in,
        "msgs_sent": sum(q.sent_frames for q in queues),
        "bytes_sent": sum(q.sent_bytes for q in queues),
        "frames_dropped": sum(link.queue.dropped for link in links) + rep.client_frames_dropped,
        "verifies": getattr(factory.verifier_of(rep.core), "checks", 0),
        "transport_problems": rep.problems.as_json(),
        "channel": rep.cluster.transport,
        "connections": {**rep.admission.status(), "replica_links_replaced": rep.replica_links_replaced,
                        "client_connections_replaced": rep.client_conns_replaced},
        "internal_errors": rep.internal_errors,
        "history_index": {"height": rep.history.height, "keys": rep.history.keys(), "rebuilt": rep.history.rebuilt,
                          "queries_served": rep.queries_server.served},
        "throttled": {"peers": {**rep.intake[ROLE_REPLICA].status(), **rep.intake[ROLE_CLIENT].status()},
                      "seconds": round(sum(i.paused_seconds for i in rep.intake.values()), 3),
                      "clients_blacklisted": rep.core.requests.blacklisted,
                      "blacklisted_frames_dropped": rep.blacklist_dropped,
                      "client_requests_dropped_over_intake": rep.intake_dropped},
    })
    return st


def status_bytes(rep) -> bytes:
    """The status, encoded to fit one frame: the drops' senders go first, then the drops."""
    st = replica_status(rep)
    data = msgpack.packb(st, use_bin_type=True, default=str)
    if len(data) > STATUS_MAX_BYTES:
        st["dropped"] = {rule: {"total": d["total"]} for rule, d in st.get("dropped", {}).items()}
        data = msgpack.packb(st, use_bin_type=True, default=str)
    if len(data) > STATUS_MAX_BYTES:
        st.pop("dropped", None)
        st.pop("transport_problems", None)
        data = msgpack.packb(st, use_bin_type=True, default=str)
    return data

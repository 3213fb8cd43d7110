"""The body of ``bftledger replica``: one replica process, from open to a signal."""
from __future__ import annotations

import logging

import trio

from bft.runtime import factory
from bft.runtime.replica import Replica
from ledger.cluster import Cluster

log = logging.getLogger("bft.runtime.replica")


def unwrap(eg: BaseException) -> BaseException:
    """The single leaf of nested exception groups (trio wraps what leaves a nursery), else eg."""
    while isinstance(eg, BaseExceptionGroup) and len(eg.exceptions) == 1:
        eg = eg.exceptions[0]
    return eg


def run_replica(cluster: Cluster, replica_id: int, *, byzantine: str | None = None, dormant: bool = False,
                group: list[int] | None = None, trace_log: str | None = None) -> int:
    """Open, serve until a signal, close. Returns an exit code."""
    rep = Replica(cluster, replica_id, byzantine=byzantine, tuning=factory.read_tuning(cluster.directory),
                  dormant=dormant, group=group, trace_log=trace_log)

    async def main() -> None:
        rep.open(trio.current_time())
        try:
            await rep.serve()
        finally:
            rep.close()
            log.info("replica %d stopped", replica_id)

    try:
        trio.run(main)
    except BaseExceptionGroup as eg:
        raise unwrap(eg) from None
    return 0

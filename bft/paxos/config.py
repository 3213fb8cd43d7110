"""Tunables of the Multi-Paxos core, with the defaults the runtime uses."""
from __future__ import annotations

from dataclasses import dataclass

from ledger import quorum
from bft.wire import MAX_BATCH, MAX_BATCH_BYTES, MAX_LIST


@dataclass(slots=True)
class PaxosConfig:
    n: int
    f: int
    batch_size: int = 128                          # requests per ACCEPT at most
    batch_bytes: int = 1024 * 1024                 # a batch's weight at most (bft.requests.request_weight)
    pipeline: int = 4                              # slots in flight (proposed, not yet chosen)
    heartbeat_interval: float = 0.05               # the leader's heartbeat (carries the commit index)
    election_timeout: tuple[float, float] = (0.3, 0.6)   # a follower's randomized timeout range
    backoff: bool = True                           # back off when pre-empted; False = naive proposer
    prevote: bool = True                           # ask a majority before raising the ballot (issue 17)
    backoff_multiplier: float = 2.0                # timeout factor per consecutive failed attempt ...
    backoff_cap: float = 8.0                       # ... capped at this factor
    retransmit_interval: float = 0.1               # re-send unanswered PREPARE / ACCEPT this often
    transfer_timeout: float = 0.25                 # ask another peer when state transfer stalls this long
    transfer_chunk: int = 64                       # blocks per state-transfer request
    checkpoint_interval: int = 32                  # compact the vote log every K executed slots
    accept_window: int = 4096                      # an acceptor ignores slots this far above its execution
    max_pending: int = 100_000                     # client requests a leader holds before refusing more
    max_pending_bytes: int = 256 * 1024 * 1024     # ... and their bytes (raw and decoded)
    client_requests: int = 2048                    # requests of one client held at most ...
    client_bytes: int = 16 * 1024 * 1024           # ... and their bytes (BUSY beyond either)
    # reads answered without ordering (bft.reads): what one client may make a replica do
    read_rate: float = 2000.0                      # reads per second per client ...
    read_burst: float = 4000.0                     # ... in bursts of this many (BUSY beyond)
    reads_held_per_client: int = 256               # reads of one client waiting for a height ...
    reads_held: int = 16384                        # ... and of all clients (BUSY beyond either)
    read_wait: float = 1.0                         # a held read is dropped after this long

    def __post_init__(self) -> None:
        if self.read_rate <= 0 or self.read_burst < 1 or self.read_wait <= 0:
            raise ValueError("read_rate and read_wait must be positive, read_burst at least 1")
        if not 1 <= self.reads_held_per_client <= self.reads_held:
            raise ValueError("reads_held_per_client must be in 1..reads_held")
        if self.f < 0:
            raise ValueError(f"f must be >= 0, got {self.f}")
        if self.n < quorum.paxos_n(self.f):
            raise ValueError(f"paxos needs n >= 2f+1 = {quorum.paxos_n(self.f)}, got n={self.n}")
        if type(self.election_timeout) is list:
            self.election_timeout = tuple(self.election_timeout)
        if len(self.election_timeout) != 2 or not 0 < self.election_timeout[0] <= self.election_timeout[1]:
            raise ValueError(f"election_timeout must be a range (low, high) with 0 < low <= high, "
                             f"got {self.election_timeout!r}")
        if not 0 < self.heartbeat_interval < self.election_timeout[0]:
            raise ValueError("heartbeat_interval must be positive and below the election timeout")
        if self.backoff_multiplier < 1 or self.backoff_cap < 1:
            raise ValueError("backoff_multiplier and backoff_cap must be >= 1")
        if not 1 <= self.batch_size <= MAX_BATCH:
            raise ValueError(f"batch_size must be in 1..{MAX_BATCH}")
        if not 128 * 1024 <= self.batch_bytes <= MAX_BATCH_BYTES:
            raise ValueError(f"batch_bytes must be in {128 * 1024}..{MAX_BATCH_BYTES}")
        if self.pipeline < 1:
            raise ValueError("pipeline must be >= 1")
        if not 1 <= self.transfer_chunk <= 256:
            raise ValueError("transfer_chunk must be in 1..256 (the state-response limit)")
        if self.checkpoint_interval < 1:
            raise ValueError("checkpoint_interval must be >= 1")
        if not self.pipeline <= self.accept_window <= MAX_LIST:
            raise ValueError(f"accept_window must be in pipeline..{MAX_LIST} (a PROMISE reports at most "
                             f"{MAX_LIST} accepted values)")
        if self.retransmit_interval <= 0 or self.transfer_timeout <= 0:
            raise ValueError("retransmit_interval and transfer_timeout must be positive")

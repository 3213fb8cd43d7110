"""Tunables of the pbft core, with the defaults the runtime uses."""
from __future__ import annotations

from dataclasses import dataclass, field

from ledger import quorum
from bft.pbft.monitor import MonitorConfig
from bft.wire import MAX_BATCH, MAX_BATCH_BYTES


@dataclass(slots=True)
class PbftConfig:
    n: int
    f: int
    checkpoint_interval: int = 32      # K: a CHECKPOINT every K sequence numbers
    log_size: int = 128                # L: H = h + L; at least 2K so the log never blocks on a checkpoint
    batch_size: int = 128              # requests per PRE-PREPARE at most
    batch_bytes: int = 1024 * 1024     # a batch's weight at most (bft.requests.request_weight)
    pipeline: int = 4                  # batches in flight before the primary lets a batch fill up
    request_timeout: float = 1.0       # view-change timer; doubles per consecutive view change
    retransmit_interval: float = 0.25  # re-send own unfinished votes / VIEW-CHANGE this often
    transfer_timeout: float = 0.5      # ask another peer when state transfer stalls this long
    transfer_chunk: int = 64           # blocks per state-transfer request
    max_pending: int = 100_000         # client requests a replica holds before refusing more
    max_pending_bytes: int = 256 * 1024 * 1024     # ... and their bytes (raw and decoded)
    client_requests: int = 2048                    # requests of one client held at most ...
    client_bytes: int = 16 * 1024 * 1024           # ... and their bytes (BUSY beyond either)
    # reads answered without ordering (bft.reads): what one client may make a replica do
    read_rate: float = 2000.0                      # reads per second per client ...
    read_burst: float = 4000.0                     # ... in bursts of this many (BUSY beyond)
    reads_held_per_client: int = 256               # reads of one client waiting for a height ...
    reads_held: int = 16384                        # ... and of all clients (BUSY beyond either)
    read_wait: float = 1.0                         # a held read is dropped after this long
    monitor: MonitorConfig = field(default_factory=MonitorConfig)   # what backups require of a primary

    def __post_init__(self) -> None:
        if self.read_rate <= 0 or self.read_burst < 1 or self.read_wait <= 0:
            raise ValueError("read_rate and read_wait must be positive, read_burst at least 1")
        if not 1 <= self.reads_held_per_client <= self.reads_held:
            raise ValueError("reads_held_per_client must be in 1..reads_held")
        if self.n < quorum.pbft_n(self.f):
            raise ValueError(f"pbft needs n >= 3f+1 = {quorum.pbft_n(self.f)}, got n={self.n}")
        if self.log_size < 2 * self.checkpoint_interval or self.log_size % self.checkpoint_interval:
            raise ValueError("log_size must be a multiple of checkpoint_interval and at least twice it")
        if not 1 <= self.batch_size <= MAX_BATCH:
            raise ValueError(f"batch_size must be in 1..{MAX_BATCH}")
        if not 128 * 1024 <= self.batch_bytes <= MAX_BATCH_BYTES:
            raise ValueError(f"batch_bytes must be in {128 * 1024}..{MAX_BATCH_BYTES}")

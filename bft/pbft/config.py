"""Tunables of the pbft core, with the defaults the runtime uses."""
from __future__ import annotations

from dataclasses import dataclass

from bft import quorum


@dataclass(slots=True)
class PbftConfig:
    n: int
    f: int
    checkpoint_interval: int = 32      # K: a CHECKPOINT every K sequence numbers
    log_size: int = 128                # L: H = h + L; at least 2K so the log never blocks on a checkpoint
    batch_size: int = 128              # requests per PRE-PREPARE at most
    pipeline: int = 4                  # batches in flight before the primary lets a batch fill up
    request_timeout: float = 1.0       # view-change timer; doubles per consecutive view change
    retransmit_interval: float = 0.25  # re-send own unfinished votes / VIEW-CHANGE this often
    transfer_timeout: float = 0.5      # ask another peer when state transfer stalls this long
    transfer_chunk: int = 64           # blocks per state-transfer request
    max_pending: int = 100_000         # client requests a replica holds before refusing more

    def __post_init__(self) -> None:
        if self.n < quorum.pbft_n(self.f):
            raise ValueError(f"pbft needs n >= 3f+1 = {quorum.pbft_n(self.f)}, got n={self.n}")
        if self.log_size < 2 * self.checkpoint_interval or self.log_size % self.checkpoint_interval:
            raise ValueError("log_size must be a multiple of checkpoint_interval and at least twice it")

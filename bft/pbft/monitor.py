"""What a backup requires of the primary of its view, so that a Byzantine primary cannot
slow the ledger to a crawl while staying under the request timer (issue 12).

After Aardvark (Clement et al., NSDI'09, section 4.3), with three rules a backup checks
every ``MonitorConfig.check_interval``; a rule that fails makes the backup SUSPECT the
primary (``bft.pbft.suspicion``: f+1 distinct SUSPECTs start the view change, so no f
faulty replicas can depose a good primary with these rules either):

* **Heartbeat.** While a request has waited to be batched for half a request timeout (by
  then a backup has relayed it to the primary, PBFT section 4.2), the primary must send a
  *useful* PRE-PREPARE at least every ``heartbeat`` seconds: one carrying a request that
  this backup has not seen batched and that has not executed. Empty batches and batches of
  executed requests are no progress, so a primary that sends them is replaced as fast as a
  silent one (it used to take about CENSOR_GRACE request timeouts).
* **Fair rounds.** Primaries serve clients in rounds (``bft.requests.FairQueue``), so every
  client's oldest request is batched within about one round. A client whose oldest request
  has waited a whole request timeout is being censored. A client this replica itself
  refused as over its quota recently is exempt: it floods, and its wait is its own doing.
* **Throughput.** Per view, the backup counts the requests that execute for the first time
  in windows of ``window`` seconds; a view's record is its best window (a rate the cluster
  has shown it can reach, whatever the load was then). After ``grace``
  seconds in a view, whenever requests were left waiting to be batched for at least
  ``demand_age`` (the primary, not the load, is the limit), the window's rate must be at
  least ``ratio`` times the best record of the last n views, a bar that rises by
  ``raise_per_s`` of itself per second in the view. So a slow primary is voted out after
  about ``grace + window`` seconds in any view after the first n, and even a good primary
  is rotated out now and then (Aardvark's regular view changes), which puts a faulty one
  back under the bar quickly. With no record yet, a view under demand ends after
  ``calibration`` seconds, so a slow first primary cannot set the bar itself.

Nothing here decides safety: these rules only choose when to SUSPECT.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import unique

from ledger.rules import CL99, OURS, Rule

AARDVARK = "Clement et al., Making Byzantine Fault Tolerant Systems Tolerate Byzantine Faults (Aardvark), NSDI 2009"


@unique
class SuspicionRule(Rule):
    """Why a backup suspects its primary (a SUSPECT, and a view change once f+1 agree)."""

    REQUEST_TIMER = ("a request waited longer than the view-change timeout", f"{CL99}, §4.4 (the backup's timer)")
    HEARTBEAT = ("no useful PRE-PREPARE for a heartbeat interval while requests waited",
                 f"{AARDVARK} (the primary's heartbeat); {OURS}: 'useful' orders a request not yet executed")
    CENSORSHIP = ("one client's oldest request waited too long to be batched while others were served",
                  f"{AARDVARK} (fairness); {OURS}")
    THROUGHPUT = ("throughput under demand below the share of the best recent views it must keep",
                  f"{AARDVARK} (regular view changes: a primary must keep up the expected throughput)")
    CALIBRATION = ("no throughput record to hold the view to after the calibration period under demand",
                   f"{OURS}: a new view must earn a record before it can be held to one")


HEARTBEAT, CENSORSHIP, THROUGHPUT, CALIBRATION = (SuspicionRule.HEARTBEAT, SuspicionRule.CENSORSHIP,
                                                  SuspicionRule.THROUGHPUT, SuspicionRule.CALIBRATION)


@dataclass(slots=True)
class MonitorConfig:
    check_interval: float = 0.1
    heartbeat: float = 0.25             # a useful PRE-PREPARE at least this often while requests wait
    window: float = 1.0                 # throughput measured over windows of this length ...
    grace: float = 1.0                  # ... and judged after this long in a view
    ratio: float = 0.6                  # of the best recent view's record
    raise_per_s: float = 0.02           # the bar rises this fraction of itself per second in a view
    demand_age: float = 0.1             # a request batched later than this: demand the primary left waiting
    calibration: float = 2.0            # a view under demand with no record to compare ends after this
    enabled: bool = True


class PrimaryMonitor:
    """A backup's view of its primary's service. Pure bookkeeping: the core feeds it events
    and asks ``verdict`` for a reason to suspect (or None)."""

    def __init__(self, cfg: MonitorConfig, n: int, now: float) -> None:
        self.cfg = cfg
        self.records: deque[float] = deque(maxlen=n)     # best window rate of each of the last n views
        self.view_start = now
        self.last_useful = now                           # the last useful PRE-PREPARE (or the view's start)
        self.window_start = now
        self.window_fresh = 0                            # first-time executions in the current window
        self.window_demand = False                       # requests waited >= demand_age in this window
        self.best = 0.0                                  # this view's best window rate
        self.next_check = now
        self.last_rate: float | None = None

    def start_view(self, now: float) -> None:
        if self.best > 0:
            self.records.append(self.best)
        self.view_start = self.last_useful = self.window_start = now
        self.window_fresh = 0
        self.window_demand = False
        self.best = 0.0
        self.last_rate = None

    def useful_pre_prepare(self, now: float) -> None:
        self.last_useful = now

    def executed(self, fresh: int) -> None:
        self.window_fresh += fresh

    def expected(self) -> float:
        return max(self.records, default=0.0)

    def required(self, now: float) -> float:
        """The rate a primary must sustain now, in requests per second (0: nothing to compare)."""
        age = now - self.view_start
        return self.cfg.ratio * self.expected() * (1 + self.cfg.raise_per_s * max(0.0, age - self.cfg.grace))

    def verdict(self, now: float, head: tuple[float, int] | None, timeout: float) -> tuple[str, str] | None:
        """(rule, reason) to suspect the primary, or None. The rules: HEARTBEAT, CENSORSHIP,
        THROUGHPUT, CALIBRATION. ``head``: (since, client) of the client whose oldest request
        has waited longest to be batched, flooding clients left out (their waits are their
        own doing, ``RequestPool.flooding``). ``timeout``: the current request timeout."""
        cfg = self.cfg
        waited = now - max(head[0], self.view_start) if head is not None else 0.0
        if waited >= cfg.demand_age:
            self.window_demand = True
        if head is not None:
            if waited >= timeout / 2 + cfg.heartbeat and now - max(self.last_useful, self.view_start) >= cfg.heartbeat:
                return SuspicionRule.HEARTBEAT, (f"no useful PRE-PREPARE for {now - self.last_useful:.2f} s "
                                                 f"while client {head[1]}'s request waits to be batched")
            if waited >= timeout:
                return SuspicionRule.CENSORSHIP, (f"client {head[1]}'s oldest request waited {waited:.2f} s "
                                                  "to be batched")
        if now - self.window_start < cfg.window:
            return None
        rate = self.window_fresh / (now - self.window_start)
        demand = self.window_demand
        self.window_start = now
        self.window_fresh = 0
        self.window_demand = False
        self.last_rate = rate
        age = now - self.view_start
        self.best = max(self.best, rate)
        if not demand:
            return None                  # the load, not the primary, set this window's rate
        if not self.records:
            if age >= cfg.calibration:
                return SuspicionRule.CALIBRATION, (f"no throughput record to hold this view to after {age:.1f} s "
                                                   "under demand")
            return None
        if age < cfg.grace + cfg.window:
            return None
        need = self.required(now)
        if rate < need:
            return SuspicionRule.THROUGHPUT, f"throughput {rate:.0f} requests/s below the required {need:.0f}/s"
        return None

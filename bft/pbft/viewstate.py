"""A pbft replica's view state as one value: Normal(view) or Changing(view) (OSDI 1999, §4.4).

Before, the view state was spread over ``view``, ``in_view_change``, ``vc_deadline``,
``vc_since`` and ``view_started``, and any of them could be set alone. Now a transition
makes a new value, and the transitions the protocol allows are the only ones there are:

    Normal(v)   --start_change(w), w >= v-->  Changing(w)       timer not armed
    Changing(v) --start_change(w), w > v -->  Changing(w)
    Changing(v) --arm(deadline)----------->  Changing(v, deadline)   2f+1 are changing (§4.5.2)
    Changing(v) --enter(w), w >= v-------->  Normal(w)          a valid NEW-VIEW
    Normal(v)   --enter(w), w > v--------->  Normal(w)          a NEW-VIEW for a view this one missed

Anything else raises ``ViewStateError``: a bug of this replica's, never peer input
(which the view-change rules drop before it gets here).

Catching up (a replica behind the others fetching certified blocks) is not a view state:
it is orthogonal, since a replica in a view change may also be fetching state, and it
lives in ``bft.pbft.transfer``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from bft.pbft.slots import LocalProtocolError


class ViewStateError(LocalProtocolError):
    pass


@dataclass(frozen=True, slots=True)
class Normal:
    view: int
    since: float                   # when this replica entered the view

    in_view_change = False
    deadline = None


@dataclass(frozen=True, slots=True)
class Changing:
    view: int                      # the view this replica is changing to
    since: float                   # when the change started
    deadline: float | None = None  # when to move on to the next view; None until 2f+1 are changing

    in_view_change = True


ViewState = Normal | Changing


def start_change(s: ViewState, view: int, now: float) -> Changing:
    if view < s.view or (view == s.view and isinstance(s, Changing)):
        raise ViewStateError(f"cannot start a view change to view {view} from {s}")
    return Changing(view, now)


def arm(s: ViewState, deadline: float) -> Changing:
    if not isinstance(s, Changing) or s.deadline is not None:
        raise ViewStateError(f"cannot arm the view-change timer in {s}")
    return replace(s, deadline=deadline)


def disarm(s: ViewState) -> ViewState:
    return replace(s, deadline=None) if isinstance(s, Changing) else s


def enter(s: ViewState, view: int, now: float) -> Normal:
    if view < s.view or (view == s.view and isinstance(s, Normal)):
        raise ViewStateError(f"cannot enter view {view} from {s}")
    return Normal(view, now)

"""Moved to ``ledger.net.transport`` (the client session runs on it too, and ``ledger`` imports
nothing from ``bft``). This alias keeps existing ``bft.runtime.transport`` imports working: it
is the very same module object. New code imports ``ledger.net.transport``."""
import sys

from ledger.net import transport as _moved

sys.modules[__name__] = _moved

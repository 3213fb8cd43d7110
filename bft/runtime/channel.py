"""Moved to ``ledger.net.channel`` (the client session runs on it too, and ``ledger`` imports
nothing from ``bft``). This alias keeps existing ``bft.runtime.channel`` imports working: it
is the very same module object. New code imports ``ledger.net.channel``."""
import sys

from ledger.net import channel as _moved

sys.modules[__name__] = _moved

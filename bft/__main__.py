"""``python -m bft``: the same as the ``bftledger`` console script."""
from bft.app.cli import main

raise SystemExit(main())

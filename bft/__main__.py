"""``python -m bft``: the same as the ``bftledger`` console script."""
try:
    from bft.app.cli import main
except KeyboardInterrupt:            # Ctrl-C while the modules load: quiet, like one during a command
    raise SystemExit(130) from None

raise SystemExit(main())

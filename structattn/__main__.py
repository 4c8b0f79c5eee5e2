"""``python -m structattn``: the command line (see :mod:`structattn.cli`)."""

from .cli import main

raise SystemExit(main())

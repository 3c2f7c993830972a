"""Entry point of `python -m precompute`."""

from precompute.cli import main

raise SystemExit(main())

"""`python -m lobby` is the same as the `lobby` command."""

from lobby.cli import main

raise SystemExit(main())

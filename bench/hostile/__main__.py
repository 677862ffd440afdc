"""`python -m bench.hostile [case …]`: see `bench.hostile.runner`."""

from __future__ import annotations

from bench.hostile.runner import main

raise SystemExit(main())

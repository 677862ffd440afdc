"""The web edge: pages, login and CSRF, the `/ws` endpoint, security headers, and the
one adapter that knows uvicorn's internals (`uvicorn_adapter`, imported only by
`lobby.server`)."""

# The uvicorn minor version `uvicorn_adapter` is written for; `pyproject.toml` pins
# the same (tests/test_uvicorn_adapter.py checks both).
UVICORN_SERIES = "0.54"


class IncompatibleUvicorn(RuntimeError):
    """The installed uvicorn lacks something `uvicorn_adapter` relies on; says which."""


class MissingLibrary(RuntimeError):
    """A browser library the pages would load is not in `static/vendor/`; says how to get it."""

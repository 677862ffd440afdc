"""Open files: every socket is one, so the socket cap must fit under the process's limit.

At start `fit_sockets` raises the soft open-files limit to the hard one (any process
may), then checks that `LOBBY_MAX_SOCKETS` plus `HEADROOM` fits. If it does not, the
cap is lowered to what fits, so tabs beyond it get the handshake's 503 ("This server is
full") instead of the server failing to accept connections at all (`EMFILE`: then
nobody, not even a page load or a refusal, gets an answer), and one line says so and
how to raise the limit.
"""

from __future__ import annotations

import resource
from collections.abc import Callable
from dataclasses import dataclass

# Files besides the lobby sockets: the listening socket, the database's files or
# connection, keep-alive connections to the media server, pages and scripts being
# loaded, handshakes being refused with 503 (each needs its socket for a moment).
HEADROOM = 100

Limits = tuple[int, int]
UNLIMITED = 1 << 20


@dataclass(frozen=True, slots=True)
class Fit:
    """The socket cap to use, the open-files limit it came from, and a sentence if lowered."""

    max_sockets: int
    limit: int
    lowered: str | None = None


def raise_soft_limit(
    get: Callable[[int], Limits] = resource.getrlimit,
    set_: Callable[[int, Limits], None] = resource.setrlimit,
) -> int:
    """Raise the soft open-files limit as far as the hard one allows; the soft limit now."""
    soft, hard = get(resource.RLIMIT_NOFILE)
    # No hard limit: the kernel's (fs.nr_open, usually 2**20) is the real one.
    target = hard if hard != resource.RLIM_INFINITY else UNLIMITED
    if soft == resource.RLIM_INFINITY or soft >= target:
        return target if soft == resource.RLIM_INFINITY else soft
    try:
        set_(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):  # not allowed here (a sandbox, say): keep the soft one
        return soft
    return target


def fit_sockets(max_sockets: int, limit: int) -> Fit:
    """`max_sockets`, or as many as fit under `limit` open files with `HEADROOM` to spare."""
    if max_sockets + HEADROOM <= limit:
        return Fit(max_sockets, limit)
    fitted = max(limit - HEADROOM, 1)
    return Fit(
        fitted,
        limit,
        f"LOBBY_MAX_SOCKETS is {max_sockets}, but this process may open only {limit} files: "
        f"holding at most {fitted} sockets (more tabs get 503). To hold {max_sockets}, raise "
        f"the open-files limit to {max_sockets + HEADROOM} or more: LimitNOFILE= in the "
        "systemd unit, `ulimit -n` in the shell that starts it, or the container's nofile ulimit.",
    )

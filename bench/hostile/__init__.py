"""Hostile clients against the real lobby server: what it does, and what it costs.

    .venv/bin/python -m bench.hostile              # every case, about 2 minutes
    .venv/bin/python -m bench.hostile 3 flood      # some cases; prints the table only

Each case starts `python -m lobby serve` as a process of its own, with the settings
the case needs, so its memory (VmRSS in /proc/<pid>/status) and CPU time (utime +
stime in /proc/<pid>/stat, every thread) can be read from outside. The OpenVidu
stand-in (`tests/openvidu_standin.py`) runs in this process. Users and login
sessions are written straight into a fresh SQLite file before the server starts.

The clients are hand-made (TCP plus RFC 6455 framing, `WsClient`) so that they can
misbehave exactly: never finish a request head, stop answering pings, stop reading
altogether, flood. Everything stays on loopback; every socket is closed and the
server is stopped (SIGTERM, then SIGKILL) even when a case fails. At most about
3,000 sockets are open per process, far under the 20,000 open-files limit.

The results go to docs/bench/hostile.md (or `--out`).

The modules: `runner` (the command: which cases, in what order, where the report
goes), `report` (a case's `Row` and the Markdown), `server` (the lobby processes
and what they cost), `accounts` (who they know), `raw_client` and `tcp` (clients
that can misbehave), `figures` (percentiles and units); then one module per case,
or per family of cases: `slow_requests` (1, 1b), `idle` (2), `silent` (3),
`stuck_reader` (4), `flood` (5), `brute_force` (6), `openvidu_down` (7), `caps` (8).
"""

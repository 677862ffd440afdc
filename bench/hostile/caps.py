"""Case 8: socket caps. One user past the per-user cap, then the process at its cap:
the refusals (429, 503), what each costs, and how soon a freed place is taken."""

from __future__ import annotations

from bench.hostile.accounts import user
from bench.hostile.figures import ms, now, pct
from bench.hostile.raw_client import WsClient, close_all, ws_open
from bench.hostile.report import Row
from bench.hostile.server import Bench


async def case_caps(b: Bench) -> Row:
    cap, per_user = 500, 20
    async with b.server("caps", LOBBY_MAX_SOCKETS=str(cap)) as srv:
        clients: list[WsClient] = []

        async def handshake(cookie: str | None) -> tuple[int, float, WsClient]:
            started = now()
            client = await ws_open(srv.port, cookie)
            return client.status.result(), now() - started, client

        async def refusals(cookie: str | None, n: int) -> tuple[set[int], list[float], float]:
            statuses, times, cpu = set(), [], srv.cpu()
            for _ in range(n):
                status, took, client = await handshake(cookie)
                client.close()
                statuses.add(status)
                times.append(took)
            return statuses, times, (srv.cpu() - cpu) / n

        try:
            accepted: list[float] = []
            for _ in range(per_user):
                status, took, client = await handshake(b.cookies[user(0)])
                clients.append(client)
                assert status == 101, status
                accepted.append(took)
            user_statuses, user_times, user_cpu = await refusals(b.cookies[user(0)], 100)
            cpu0 = srv.cpu()
            for i in range(1, cap // per_user):
                for _ in range(per_user):
                    status, took, client = await handshake(b.cookies[user(i)])
                    clients.append(client)
                    assert status == 101, status
                    accepted.append(took)
            cpu_accept = (srv.cpu() - cpu0) / (cap - per_user)
            sockets = (await srv.readyz())["sockets"]
            full_statuses, full_times, full_cpu = await refusals(
                b.cookies[user(cap // per_user)], 100
            )
            anonymous, anonymous_times, _ = await refusals(None, 3)
            clients.pop().close()
            started, status = now(), 0
            while status != 101 and now() - started < 10:
                status, _, client = await handshake(b.cookies[user(cap // per_user)])
                clients.append(client)
            freed = now() - started
        finally:
            close_all(clients)
    log = b.logs.pop("caps")
    refused = len(user_times) + len(full_times) + len(anonymous_times)
    row = Row(
        "8. Socket caps",
        f"`LOBBY_MAX_SOCKETS={cap}`, `LOBBY_MAX_SOCKETS_PER_USER={per_user}` (default): one "
        f"user opens {per_user + 1}, then {cap} sockets in all and one more",
        f"{per_user + 1}st socket of one user: HTTP **{'/'.join(map(str, sorted(user_statuses)))}**"
        f" in {ms(pct(user_times, 50))} (max {ms(max(user_times))}); with {sockets} open the "
        f"next: HTTP **{'/'.join(map(str, sorted(full_statuses)))}** in "
        f"{ms(pct(full_times, 50))} (max {ms(max(full_times))}), also without a cookie "
        f"({'/'.join(map(str, sorted(anonymous)))}); one socket closed → the next handshake "
        f"was accepted within {ms(freed)}",
        f"An accepted handshake: {ms(pct(accepted, 50))} p50 and ≈{ms(cpu_accept)} CPU; "
        f"a 429 ≈{ms(user_cpu)} CPU, a 503 ≈{ms(full_cpu)} CPU (averages over 100: the CPU "
        "clock ticks every 10 ms)",
    )
    if log.errors:
        row.findings.append(
            f"**Every refused handshake logs an ERROR.** The {refused} refusals (429 and 503) "
            f"wrote {log.errors} lines `{log.first_error.strip()}`: "
            "`socket._deny` answers with `send_denial_response`, and uvicorn's sans-I/O protocol "
            "never marks such a handshake complete, so when the endpoint returns it logs that "
            "error (it sends no second response). Expected refusals at ERROR level mislead "
            "operators, and a client retrying against a full server writes one line per try."
        )
    return row

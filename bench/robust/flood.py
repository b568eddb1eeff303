"""Scenario 2, ``flood``: K silent connections and M that trickle a StartupMessage one byte a
second (slowloris). Holds when every canary login succeeds in under 1 s, pggate keeps its PID
and its open file descriptors stay within ``max_startup_connections`` (+ a small reserve) of
where they began.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench.robust.common import (
    CANARY_LOGIN_LIMIT,
    FD_RESERVE,
    Env,
    Row,
    log,
    open_or_none,
    startup,
)

NAME = "flood"


@dataclass
class Tally:
    """What the flood's load generator counted."""

    opened: int = 0
    refused: int = 0
    closed_by_pggate: int = 0
    trickled: int = 0  # bytes


async def flood_run(
    port: int, idle: int, trickle: int, hold: float, stats: Tally, sample: Callable[[], None]
) -> None:
    """Open ``idle`` silent and ``trickle`` trickling connections (mixed), keep them ``hold``
    seconds after the last one is open, sampling pggate meanwhile."""
    # a StartupMessage that never ends within the run: ~4 KB at one byte a second
    packet = startup(user="postgres", database="postgres", application_name="x" * 4000)
    kinds = [False] * idle + [True] * trickle
    random.Random(1).shuffle(kinds)
    writers: list[asyncio.StreamWriter] = []
    tricklers: list[asyncio.Task[None]] = []
    gate = asyncio.Semaphore(128)

    async def watch(reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(OSError):
            await reader.read(1)  # EOF (or a byte, a protocol breach)
        stats.closed_by_pggate += 1

    async def trickle_one(writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            for i in range(len(packet)):
                writer.write(packet[i : i + 1])
                await writer.drain()
                stats.trickled += 1
                await asyncio.sleep(1.0)

    async def open_one(trickles: bool) -> None:
        async with gate:
            conn = await open_or_none(port)
        if conn is None:
            stats.refused += 1
            return
        reader, writer = conn
        stats.opened += 1
        writers.append(writer)
        watchers.append(asyncio.create_task(watch(reader)))
        if trickles:
            tricklers.append(asyncio.create_task(trickle_one(writer)))

    watchers: list[asyncio.Task[None]] = []
    sampler_stop = asyncio.Event()

    async def sampler() -> None:
        while not sampler_stop.is_set():
            sample()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(sampler_stop.wait(), 0.25)

    sampling = asyncio.create_task(sampler())
    await asyncio.gather(*(open_one(k) for k in kinds))
    await asyncio.sleep(hold)
    for task in tricklers + watchers:
        task.cancel()
    await asyncio.gather(*tricklers, *watchers, return_exceptions=True)
    for writer in writers:
        writer.close()
    sampler_stop.set()
    await sampling


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--flood-idle", type=int, help="quick 500, full 5,000")
    p.add_argument("--flood-trickle", type=int, help="quick 50, full 500")
    p.add_argument("--flood-seconds", type=float, help="quick 5, full 20")
    p.add_argument(
        "--startup-bound",
        type=int,
        help="pggate's max_startup_connections in the flood (quick 200, full 1000)",
    )


def set_defaults(args: argparse.Namespace) -> None:
    quick = args.quick
    args.flood_idle = args.flood_idle or (500 if quick else 5000)
    args.flood_trickle = args.flood_trickle or (50 if quick else 500)
    args.flood_seconds = args.flood_seconds or (5 if quick else 20)
    args.startup_bound = args.startup_bound or (200 if quick else 1000)


def run(env: Env, args: argparse.Namespace) -> Row:
    idle, trickle, bound = args.flood_idle, args.flood_trickle, args.startup_bound
    with env.pggate("flood", [f"max_startup_connections = {bound}"]) as gate:
        base_fds = gate.fds()
        fds = {"max": base_fds}

        def sample() -> None:
            fds["max"] = max(fds["max"], gate.fds())

        canary = gate.canary()
        log(
            f"flood: {idle:,} silent + {trickle:,} trickling, max_startup_connections {bound}, "
            f"held {args.flood_seconds} s"
        )
        stats = Tally()
        with canary.running():
            time.sleep(0.3)
            asyncio.run(flood_run(gate.port, idle, trickle, args.flood_seconds, stats, sample))
        limit = base_fds + bound + FD_RESERVE
        problems = []
        if not gate.alive_same():
            problems.append(f"pggate died or restarted (exit {gate.proc.poll()})")
        if canary.failures:
            problems.append(f"canary: {canary.failures[0]}")
        if canary.slow_logins:
            problems.append(f"{canary.slow_logins} canary logins took >= {CANARY_LOGIN_LIMIT} s")
        if not canary.logins:
            problems.append("no canary login at all")
        if fds["max"] > limit:
            problems.append(f"pggate had {fds['max']} descriptors open (limit {limit})")
        if stats.refused:
            problems.append(f"{stats.refused} flood connections refused (not the load asked)")
        bad = gate.bad_log_lines()
        if bad:
            problems.append(f"{len(bad)} internal-error log lines, e.g. {bad[0][:160]!r}")
    return Row(
        "flood",
        f"{stats.opened:,} connections ({idle:,} silent + {trickle:,} trickling 1 B/s, "
        f"{stats.trickled:,} bytes trickled), max_startup_connections = {bound}, "
        f"held {args.flood_seconds:g} s; pggate closed {stats.closed_by_pggate:,} of them",
        f"{canary.lost()} ({canary.slow_logins} slower than 1 s); pggate fds "
        f"{base_fds} -> max {fds['max']} (limit {limit})",
        canary.latency(),
        problems,
    )

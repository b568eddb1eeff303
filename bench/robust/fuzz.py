"""Scenario 1, ``fuzz``: N generated inputs over raw TCP, many connections at once.

The inputs are mutations of StartupMessage, SSLRequest, GSSENCRequest, CancelRequest,
password/SASL/MD5 messages after a startup and TLS ClientHellos, randomly split. Holds when
pggate keeps its PID, every fuzz connection gets EOF within ``authentication_timeout`` (5 s),
its log has no "internal error" line, its RSS grows by less than 10 MiB and every canary login
succeeds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import random
import ssl
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench.robust.common import RSS_LIMIT, Env, Row, log, message, open_or_none, startup

NAME = "fuzz"
AUTH_TIMEOUT = 5  # seconds: pggate's authentication_timeout in the fuzz scenario
EOF_SLACK = 2.0  # seconds past authentication_timeout before a fuzz socket counts as left open
FUZZ_HBA = (
    "hostssl all all 127.0.0.1/32 trust\n"
    "host all fuzz_pw 127.0.0.1/32 password\n"
    "host all fuzz_md5 127.0.0.1/32 md5\n"
    "host all fuzz_scram 127.0.0.1/32 scram-sha-256\n"
)

SSL_REQUEST = struct.pack("!II", 8, 80877103)
GSSENC_REQUEST = struct.pack("!II", 8, 80877104)
INTERESTING = (0, 1, 4, 7, 8, 9, 16, 127, 128, 255, 10000, 10001, 65535, 2**31 - 1, 2**32 - 1)


def client_hello() -> bytes:
    """A real TLS ClientHello (the first flight of an ssl.SSLObject, through a MemoryBIO)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def seeds() -> list[bytes]:
    hello = client_hello()
    scram_first = b"n,,n=,r=fyko+d2lbbFgONRv9qkxdawL"
    sasl_initial = message(
        b"p", b"SCRAM-SHA-256\0" + struct.pack("!I", len(scram_first)) + scram_first
    )
    sasl_final = message(
        b"p", b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=" + b"A" * 44
    )
    pg = startup(user="postgres", database="postgres", application_name="fuzz")
    return [
        pg,
        startup(user="postgres", options="-c search_path=x", replication="database"),
        startup(196610, user="postgres", _pq_="x"),  # protocol 3.2 (NegotiateProtocolVersion)
        startup(131072, user="postgres"),  # protocol 2.0
        SSL_REQUEST,
        SSL_REQUEST + hello,
        SSL_REQUEST + pg,  # bytes after SSLRequest (CVE-2021-23214)
        GSSENC_REQUEST,
        GSSENC_REQUEST + pg,  # bytes after GSSENCRequest (CVE-2021-23222)
        GSSENC_REQUEST + hello,
        SSL_REQUEST + GSSENC_REQUEST + SSL_REQUEST,  # alternating requests
        hello,  # direct TLS
        hello + GSSENC_REQUEST,
        struct.pack("!IIII", 16, 80877102, 12345, 67890),  # CancelRequest
        startup(user="fuzz_pw", database="postgres") + message(b"p", b"secret\0"),
        startup(user="fuzz_md5") + message(b"p", b"md5" + b"0" * 32 + b"\0"),
        startup(user="fuzz_scram") + sasl_initial + sasl_final,
        startup(user="fuzz_scram") + message(b"p", b"NOPE\0" + struct.pack("!i", -1)),
        startup(user="postgres") + message(b"X", b""),
    ]


def mutate(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(9)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:  # flip a bit
            i = min(pos, len(buf) - 1)
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:  # a random byte
            buf[min(pos, len(buf) - 1)] = rng.randrange(256)
        elif op == 2:  # insert random bytes
            buf[pos:pos] = rng.randbytes(rng.randint(1, 16))
        elif op == 3:  # delete a range
            del buf[pos : pos + rng.randint(1, 16)]
        elif op == 4:  # duplicate a range
            buf[pos:pos] = buf[pos : pos + rng.randint(1, 64)]
        elif op == 5:  # truncate
            del buf[pos:]
        elif op == 6:  # an interesting 32-bit value (a length, a code) somewhere
            buf[pos : pos + 4] = struct.pack("!I", rng.choice(INTERESTING))
        elif op == 7:  # splice another seed in
            buf[pos:] = rng.choice(pool)
        else:  # append junk
            buf += rng.randbytes(rng.randint(1, 256))
    return bytes(buf)


def fuzz_input(rng: random.Random, pool: list[bytes]) -> list[bytes]:
    """One input, split into the pieces sent one after the other."""
    roll = rng.random()
    if roll < 0.02:
        data = rng.randbytes(rng.randint(0, 512))
    elif roll < 0.10:
        data = rng.choice(pool)
    else:
        data = mutate(rng, rng.choice(pool), pool)
    cuts = sorted(rng.randrange(len(data) + 1) for _ in range(rng.choice((0, 0, 1, 2, 4))))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a] or [b""]


@dataclass
class Tally:
    """What the fuzz load generator counted."""

    opened: int = 0
    refused: int = 0
    held: int = 0  # connections left for pggate's authentication_timeout to close
    left_open: int = 0  # no EOF within authentication_timeout + EOF_SLACK
    slowest_eof: float = 0.0


async def fuzz_one(
    port: int,
    pieces: list[bytes],
    hold: bool,
    pause: bool,
    stats: Tally,
    active: asyncio.Semaphore,
) -> None:
    """Connect, send the pieces, half-close (or, ``hold``, not), read until pggate closes."""
    start = time.monotonic()
    async with active:
        if (conn := await open_or_none(port)) is None:
            stats.refused += 1
            return
        reader, writer = conn
        stats.opened += 1
        try:
            for piece in pieces:
                writer.write(piece)
                await writer.drain()
                if pause:
                    await asyncio.sleep(0.002)
            if not hold:
                writer.write_eof()
        except OSError:
            pass  # pggate closed it already
        if not hold:
            await drain_to_eof(reader, start, stats)
    if hold:  # waits for authentication_timeout without holding a slot
        stats.held += 1
        await drain_to_eof(reader, start, stats)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def drain_to_eof(reader: asyncio.StreamReader, start: float, stats: Tally) -> None:
    deadline = start + AUTH_TIMEOUT + EOF_SLACK
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            if not await asyncio.wait_for(reader.read(65536), remaining):
                break
    except TimeoutError:
        stats.left_open += 1
        return
    except OSError:
        pass  # reset: closed too
    stats.slowest_eof = max(stats.slowest_eof, time.monotonic() - start)


async def fuzz_run(
    port: int,
    count: int,
    concurrency: int,
    seed: int,
    stats: Tally,
    at_warmup: Callable[[], None],
) -> None:
    rng = random.Random(seed)
    pool = seeds()
    active = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task[None]] = set()
    warmup = min(max(count // 10, 500), count // 2)  # RSS baseline: after the first inputs
    for i in range(count):
        if i == warmup:
            at_warmup()
        while len(tasks) >= 4 * concurrency:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        pieces = fuzz_input(rng, pool)
        task = asyncio.create_task(
            fuzz_one(port, pieces, rng.random() < 0.01, rng.random() < 0.1, stats, active)
        )
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fuzz-inputs", type=int, help="quick 5,000, full 1,000,000")
    p.add_argument("--concurrency", type=int, default=64, help="fuzz connections at a time")
    p.add_argument("--seed", type=int, default=12)


def set_defaults(args: argparse.Namespace) -> None:
    args.fuzz_inputs = args.fuzz_inputs or (5000 if args.quick else 1_000_000)


def run(env: Env, args: argparse.Namespace) -> Row:
    count = args.fuzz_inputs
    settings = [f"authentication_timeout = {AUTH_TIMEOUT}s"]
    with env.pggate("fuzz", settings, FUZZ_HBA) as gate:
        canary = gate.canary()
        stats = Tally()
        rss = {"base": gate.rss()}  # measured again after the warm-up

        def at_warmup() -> None:
            rss["base"] = gate.rss()

        log(f"fuzz: {count:,} inputs, {args.concurrency} connections at a time")
        started = time.monotonic()
        with canary.running():
            time.sleep(0.3)
            asyncio.run(fuzz_run(gate.port, count, args.concurrency, args.seed, stats, at_warmup))
            time.sleep(0.5)
        secs = time.monotonic() - started
        time.sleep(1.0)
        growth = gate.rss() - rss["base"]
        alive = gate.alive_same()
        problems = []
        if not alive:
            problems.append(f"pggate died or restarted (exit {gate.proc.poll()})")
        bad = gate.bad_log_lines()
        if bad:
            problems.append(f"{len(bad)} internal-error log lines, e.g. {bad[0][:160]!r}")
        if stats.left_open:
            problems.append(f"{stats.left_open} fuzz connections open past {AUTH_TIMEOUT} s")
        if stats.refused:
            problems.append(f"{stats.refused} fuzz connections refused")
        if growth >= RSS_LIMIT:
            problems.append(f"RSS grew {growth / 2**20:.1f} MiB")
        if canary.failures:
            problems.append(f"canary: {canary.failures[0]}")
        if not canary.logins:
            problems.append("no canary login at all")
    return Row(
        "fuzz",
        f"{stats.opened:,} inputs in {secs:.0f} s ({args.concurrency} at a time, "
        f"{stats.held} left to authentication_timeout = {AUTH_TIMEOUT} s)",
        f"{canary.lost()}; {'same pggate PID' if alive else 'pggate CRASHED'}; "
        f"{stats.left_open} sockets open past {AUTH_TIMEOUT} s (slowest EOF "
        f"{stats.slowest_eof:.1f} s); {len(bad)} internal errors; RSS {growth / 2**20:+.1f} MiB",
        canary.latency(),
        problems,
    )

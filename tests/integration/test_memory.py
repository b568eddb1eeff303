"""Closed sessions leave nothing behind: 10,000 connections through pggate do not grow it."""

from __future__ import annotations

import asyncio
import struct

import psutil
import pytest
from conftest import GatewayFactory

pytestmark = pytest.mark.integration

READY_IDLE = b"Z\x00\x00\x00\x05I"
TERMINATE = b"X\x00\x00\x00\x04"


def startup(user: str) -> bytes:
    body = struct.pack("!I", 196608) + b"user\0" + user.encode() + b"\0\0"
    return struct.pack("!I", len(body) + 4) + body


async def one_session(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(startup("postgres"))
    data = b""
    while READY_IDLE not in data:
        chunk = await reader.read(65536)
        assert chunk, data
        data += chunk
    writer.write(TERMINATE)
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def sessions(port: int, count: int, parallel: int = 16) -> None:
    gate = asyncio.Semaphore(parallel)

    async def bounded() -> None:
        async with gate:
            await one_session(port)

    await asyncio.gather(*(bounded() for _ in range(count)))


def test_ten_thousand_connections_do_not_grow_the_process(make_gateway: GatewayFactory) -> None:
    # Pooled backends keep the test fast (no fork per connection); the gateway's own per-session
    # objects, TLS-free here, are what must not accumulate.
    gateway = make_gateway(conf="pool_mode = session\nlog_connections = off\n")
    process = psutil.Process(gateway.process.pid)
    asyncio.run(sessions(gateway.port, 1000))  # warm up: imports, pools, allocator arenas
    before = process.memory_info().rss
    asyncio.run(sessions(gateway.port, 10_000))
    after = process.memory_info().rss
    growth = after - before
    # A leak of even 1 KiB per session would show as ~10 MB.
    assert growth < 4 * 1024 * 1024, f"RSS grew by {growth / 1024:.0f} KiB over 10,000 sessions"

"""Microbenchmark of the sans-IO TLS channel: µs per round trip through memory, and the memory
a session keeps after one large transfer.

A round trip is client.encrypt -> server.feed -> server.encrypt -> client.feed, i.e. the
relay's per-message work on both ends (two encryptions, two decryptions). The retained memory
is the process's RSS growth, per channel pair, after 256,000 bytes (one uvloop read) went each
way through 200 pairs: OpenSSL's memory BIOs keep the largest size they ever held, which is
why the channel feeds and encrypts in 16 KiB slices.  Run:
``python bench/tls_channel_micro.py [--seconds S]``.
"""

from __future__ import annotations

import argparse
import gc
import os
import ssl
import sys
import tempfile
import time
from pathlib import Path

import psutil

from pggate.transport.tls import TlsChannel

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "unit"))
from conftest_tls import CertFactory, connect  # the TLS unit tests' certificates and handshake


def pair(directory: Path) -> tuple[TlsChannel, TlsChannel]:
    """A client and a server channel (ALPN postgresql) after their handshake, with a server
    certificate for ``localhost`` issued by a CA made in ``directory``."""
    factory = CertFactory(directory)
    return connect(factory.server_context(), factory.client_context())


def round_trips(client: TlsChannel, server: TlsChannel, size: int, seconds: float) -> float:
    """µs per round trip of ``size`` plaintext bytes each way (best of 5 runs)."""
    payload = b"x" * size
    c_enc, c_feed, s_enc, s_feed = client.encrypt, client.feed, server.encrypt, server.feed
    n = 10
    while True:  # calibrate to ~seconds/5 per run
        start = time.perf_counter()
        for _ in range(n):
            assert len(c_feed(s_enc(s_feed(c_enc(payload))))) == size
        elapsed = time.perf_counter() - start
        if elapsed > seconds / 5 / 4:
            break
        n *= 4
    n = max(int(n * (seconds / 5) / elapsed), 10)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            c_feed(s_enc(s_feed(c_enc(payload))))
        best = min(best, (time.perf_counter() - start) / n)
    return best * 1e6


def retained_kib(directory: Path, pairs: int = 200, size: int = 256_000) -> float:
    """RSS growth per channel pair (KiB) once ``size`` bytes went each way through each."""
    factory = CertFactory(directory)
    server_ctx, client_ctx = factory.server_context(), factory.client_context()
    channels = [connect(server_ctx, client_ctx) for _ in range(pairs)]
    gc.collect()
    before = psutil.Process().memory_info().rss
    payload = os.urandom(size)
    for client, server in channels:
        assert server.feed(client.encrypt(payload)) == payload
        assert client.feed(server.encrypt(payload)) == payload
    gc.collect()
    grown: int = psutil.Process().memory_info().rss - before
    return grown / pairs / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0, help="time per size")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        client, server = pair(Path(tmp))
        print(f"{ssl.OPENSSL_VERSION}; {server.version} {server.cipher}")
        for label, size in (("100 B", 100), ("64 KiB", 65536)):
            us = round_trips(client, server, size, args.seconds)
            rate = 2 * size / us  # bytes per µs = MB/s, both directions
            print(f"{label:>7} round trip: {us:8.2f} µs  ({rate:7.1f} MB/s through both ends)")
        kib = retained_kib(Path(tmp))
        print(f"retained after 256,000 B each way: {kib:7.1f} KiB per channel pair")


if __name__ == "__main__":
    main()

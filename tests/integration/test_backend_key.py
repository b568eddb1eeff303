"""A backend that sends no BackendKeyData (a pooler in front of PostgreSQL may not): the client
still gets pggate's own key, and a cancel with it is answered (EOF) but never forwarded as a
key-less CancelRequest, which would be malformed."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import prepare_gateway_dir, read_all, start_gateway, startup_packet

from pggate.proto import codec, codes

READY = codec.ready_for_query(codes.TX_IDLE)
CANCEL_CODE = 80877102


class KeylessBackend:
    """Trusts everyone and never sends BackendKeyData; records what each connection opened
    with (a StartupMessage or a CancelRequest)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.openings: list[int] = []
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._talk, args=(conn,), daemon=True).start()
        self.sock.close()

    def _talk(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            header = conn.recv(8)
            if len(header) < 8:
                return
            length, code = struct.unpack("!II", header)
            self.openings.append(code)
            if code == CANCEL_CODE:
                return
            conn.recv(length - 8)
            conn.sendall(codec.authentication_ok() + READY)
            with contextlib.suppress(OSError):  # pggate closes when the client goes
                while conn.recv(65536):
                    pass

    def close(self) -> None:
        """Stop accepting; the serving thread closes the socket itself (closing it under a
        blocked accept() would raise in that thread)."""
        self._stop = True
        self._thread.join(timeout=5)


@pytest.fixture
def keyless() -> Iterator[KeylessBackend]:
    backend = KeylessBackend()
    yield backend
    backend.close()


def test_a_cancel_for_a_keyless_backend_is_not_forwarded(
    keyless: KeylessBackend, tmp_path: Path
) -> None:
    directory = tmp_path / "gw"
    conninfo = f"host=127.0.0.1 port={keyless.port} sslmode=disable user=postgres"
    port = prepare_gateway_dir(directory, conninfo)
    gateway = start_gateway(directory, port=port)
    try:
        with socket.create_connection(("127.0.0.1", gateway.port)) as client:
            client.sendall(startup_packet(user="alice", database="db"))
            greeting = read_all(client, until=READY)
            # pggate's own BackendKeyData, just before ReadyForQuery.
            at = greeting.index(codes.MSG_BACKEND_KEY_DATA)
            pid, key = codec.parse_backend_key_data(greeting[at + 5 : at + 13])
            with socket.create_connection(("127.0.0.1", gateway.port)) as canceller:
                canceller.sendall(codec.cancel_request(pid, key))
                assert read_all(canceller) == b""  # as PostgreSQL: nothing comes back
            deadline = time.monotonic() + 5
            while "not forwarded" not in gateway.log() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert "not forwarded: its backend gave no key" in gateway.log()
            assert CANCEL_CODE not in keyless.openings
            assert keyless.openings.count(codes.PROTOCOL_3_0) == 1
    finally:
        gateway.stop()

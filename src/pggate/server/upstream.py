"""Backend connections: open them, log in as pggate's own role (catalog look-ups), forward
cancel requests.

The protocol logic lives in :mod:`pggate.proto.backend`; a client's own backend login is run by
:class:`~pggate.login.LoginMachine`. This module only moves bytes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from pggate.conninfo import BackendAddress
from pggate.login.machine import backend_login, backend_unavailable
from pggate.proto import codec
from pggate.proto.backend import LoginComplete, LoginFailed
from pggate.proto.errors import ClientError
from pggate.server.inbox import InboxProtocol

log = logging.getLogger("pggate.upstream")


async def open_connection(address: BackendAddress) -> tuple[asyncio.Transport, InboxProtocol]:
    """Open a raw connection to the backend; OSError on failure, no time limit of its own."""
    loop = asyncio.get_running_loop()
    if address.is_unix_socket:
        return await loop.create_unix_connection(InboxProtocol, address.socket_path)
    return await loop.create_connection(InboxProtocol, address.host, address.port)


async def connect(address: BackendAddress) -> tuple[asyncio.Transport, InboxProtocol]:
    """Open a raw connection to the backend, bounded by its connect_timeout."""
    try:
        async with asyncio.timeout(address.connect_timeout):
            return await open_connection(address)
    except (OSError, TimeoutError) as exc:
        raise backend_unavailable(f"{address.describe()}: {exc or 'timed out'}") from exc


@dataclass(slots=True)
class BackendSession:
    """A logged-in backend connection, ready to be spliced to its client."""

    transport: asyncio.Transport
    protocol: InboxProtocol
    login: LoginComplete


async def login(
    address: BackendAddress, user: str, parameters: Mapping[str, str]
) -> BackendSession | LoginFailed:
    """Connect and log in as ``user``; the backend's own refusal is returned, not raised."""
    transport, protocol = await connect(address)
    machine = backend_login(address, user, parameters)
    try:
        transport.write(machine.startup())
        async with asyncio.timeout(address.connect_timeout):
            while True:
                if not await protocol.wait_for_data():
                    raise backend_unavailable(
                        f"{address.describe()}: server closed the connection during login"
                    )
                reply, outcome = machine.receive(protocol.take())
                if reply:
                    transport.write(reply)
                if isinstance(outcome, LoginFailed):
                    transport.close()
                    return outcome
                if outcome is not None:
                    return BackendSession(transport, protocol, outcome)
    except TimeoutError:
        transport.close()
        raise backend_unavailable(f"{address.describe()}: login timed out") from None
    except BaseException:
        transport.close()
        raise


async def send_cancel(address: BackendAddress, pid: int, key: bytes) -> None:
    """Forward a CancelRequest; like PostgreSQL, nothing comes back."""
    try:
        transport, protocol = await connect(address)
    except ClientError as exc:
        log.warning("could not forward cancel request: %s", exc.log_detail)
        return
    transport.write(codec.cancel_request(pid, key))
    try:
        async with asyncio.timeout(address.connect_timeout):
            while await protocol.wait_for_data():
                protocol.take()
    except TimeoutError:
        pass
    finally:
        transport.close()


__all__ = [
    "BackendSession",
    "backend_unavailable",
    "connect",
    "login",
    "open_connection",
    "send_cancel",
]

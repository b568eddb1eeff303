"""Backend connections: log in as the client's role, forward cancel requests, run catalog queries.

The protocol logic lives in :mod:`pggate.proto.backend`; this module only moves its bytes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from pggate.conninfo import BackendAddress
from pggate.errors import ClientError
from pggate.proto import codec, codes
from pggate.proto.backend import BackendLogin, LoginComplete, LoginFailed
from pggate.server.inbox import InboxProtocol

log = logging.getLogger("pggate.upstream")


def backend_unavailable(reason: str) -> ClientError:
    """What the client sees when pggate cannot reach its backend (detail goes to the log)."""
    return ClientError(
        codes.SQLSTATE_CONNECTION_FAILURE,
        "could not connect to the backend server",
        log_detail=reason,
    )


async def connect(address: BackendAddress) -> tuple[asyncio.Transport, InboxProtocol]:
    """Open a raw connection to the backend, bounded by its connect_timeout."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(address.connect_timeout):
            if address.is_unix_socket:
                transport, protocol = await loop.create_unix_connection(
                    InboxProtocol, address.socket_path
                )
            else:
                transport, protocol = await loop.create_connection(
                    InboxProtocol, address.host, address.port
                )
    except (OSError, TimeoutError) as exc:
        raise backend_unavailable(f"{address.describe()}: {exc or 'timed out'}") from exc
    return transport, protocol


@dataclass(slots=True)
class BackendSession:
    """A logged-in backend connection, ready to be spliced to its client."""

    transport: asyncio.Transport
    protocol: InboxProtocol
    login: LoginComplete


async def login(
    address: BackendAddress,
    user: str,
    parameters: Mapping[str, str],
    *,
    scram_keys: tuple[bytes, bytes] | None = None,
) -> BackendSession | LoginFailed:
    """Connect and log in as ``user``; the backend's own refusal is returned, not raised.

    The backend conninfo's password is pggate's own role's, used only for that role;
    ``scram_keys`` (from the client's SCRAM login) answer a backend that asks for SCRAM.
    """
    transport, protocol = await connect(address)
    machine = BackendLogin(
        user=user,
        parameters=parameters,
        password=address.password if user == address.user else None,
        scram_keys=scram_keys,
    )
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

"""Backend connections for pggate's own use: log in (catalog look-ups), forward cancels.

The decisions are :mod:`pggate.hop.plan`'s and the links :mod:`pggate.server.link`'s; a
client's own backend login is run by :class:`~pggate.login.LoginMachine` with the same plan.
This module only drives them for pggate's own role.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pggate.conninfo import BackendAddress
from pggate.hop.plan import Attempt, ConnectPlan, GiveUp, Step
from pggate.hop.route import Route
from pggate.login.machine import backend_unavailable
from pggate.proto import codec
from pggate.proto.backend import PLAIN_TCP, LoginComplete, LoginFailed, refused_by_pggate
from pggate.proto.errors import ClientError
from pggate.server import link
from pggate.server.inbox import InboxProtocol

log = logging.getLogger("pggate.upstream")

Receive = Callable[[bytes], tuple[bytes, LoginComplete | LoginFailed | None]]


@dataclass(slots=True)
class BackendSession:
    """A logged-in backend connection, ready to be used or spliced to a client."""

    transport: asyncio.Transport
    protocol: InboxProtocol
    login: LoginComplete
    address: BackendAddress
    link: link.LinkFacts


async def connect(
    route: Route, plan: ConnectPlan, step: Step, kept: link.Established | None = None
) -> tuple[link.Established, Attempt]:
    """Carry out the plan until a link is up (TLS or GSSAPI encryption as the plan says);
    08006 when none is."""
    while True:
        if isinstance(step, GiveUp):
            raise backend_unavailable(step.detail)
        address = route.addresses[step.host]
        try:
            return await link.establish(address, step, route.tls, kept, route.gss), step
        except link.Unreachable as exc:
            step = plan.unreachable(str(exc))
        except (link.TlsRefused, link.GssRefused) as exc:
            kept = link.Established(exc.transport, exc.protocol, PLAIN_TCP)
            refused = isinstance(exc, link.TlsRefused)
            step = plan.tls_refused() if refused else plan.gss_refused()
            if isinstance(step, GiveUp) or not step.same_connection:
                exc.transport.close()
                kept = None
        except link.LinkFailed as exc:
            step = plan.link_failed(str(exc))
        except link.LinkBroken as exc:
            raise backend_unavailable(plan.broken(str(exc)).detail) from None


async def login(
    route: Route, user: str, parameters: Mapping[str, str], address: BackendAddress | None = None
) -> BackendSession | LoginFailed:
    """Connect and log in as ``user`` (libpq's host, TLS and target_session_attrs rules), or
    on ``address`` only, whatever its role; the backend's own refusal is returned."""
    plan = route.plan() if address is None else route.plan_for(address)
    step: Step = plan.start()
    kept: link.Established | None = None
    while True:
        established, attempt = await connect(route, plan, step, kept)
        kept = None
        address = route.addresses[attempt.host]
        machine = route.login(address, user, parameters, established.security)
        transport, protocol = established.transport, established.protocol
        try:
            async with asyncio.timeout(address.connect_timeout):
                outcome = await _run_login(machine.startup(), machine.receive, transport, protocol)
        except TimeoutError:
            transport.close()
            step = plan.unreachable("timeout expired")
            continue
        except ClientError as err:  # pggate's own refusal (require_auth, ...), host named
            transport.close()
            where = plan.broken(err.log_detail or err.message).detail
            raise refused_by_pggate(err, where) from None
        except BaseException:
            transport.close()
            raise
        if isinstance(outcome, LoginFailed):
            transport.close()
            step = plan.login_refused(
                outcome.error.sqlstate, outcome.error.message, outcome.error_message
            )
            if isinstance(step, GiveUp) and step.refusal is not None:
                return outcome
            continue
        retry = plan.logged_in(outcome.parameters)
        if retry is None:
            return BackendSession(transport, protocol, outcome, address, established.facts)
        transport.write(codec.terminate())
        transport.close()
        step = retry


async def _run_login(
    startup: bytes,
    receive: Receive,
    transport: asyncio.Transport,
    protocol: InboxProtocol,
) -> LoginComplete | LoginFailed:
    transport.write(startup)
    while True:
        if not await protocol.wait_for_data():
            raise backend_unavailable("server closed the connection unexpectedly")
        reply, outcome = receive(protocol.take())
        if reply:
            transport.write(reply)
        if outcome is not None:
            return outcome


async def send_cancel(route: Route, address: BackendAddress, pid: int, key: bytes) -> None:
    """Forward a CancelRequest to the host the session runs on, over the same kind of link
    libpq 17+ would use (PQcancelCreate keeps the connection's encryption settings); like
    PostgreSQL, nothing comes back."""
    plan = route.plan_for(address)
    try:
        established, _ = await connect(route, plan, plan.start())
    except ClientError as exc:
        log.warning("could not forward cancel request: %s", exc.log_detail)
        return
    transport, protocol = established.transport, established.protocol
    transport.write(codec.cancel_request(pid, key))
    try:
        async with asyncio.timeout(address.connect_timeout):
            while await protocol.wait_for_data():
                protocol.take()
    except TimeoutError:
        pass
    finally:
        transport.close()


__all__ = ["BackendSession", "backend_unavailable", "connect", "login", "send_cancel"]

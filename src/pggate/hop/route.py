"""The backend of one snapshot: the conninfo, its TLS context, and what a login may accept.

Both executors of a backend login (a client's session, :mod:`pggate.server.session`, and
pggate's own catalog look-ups, :mod:`pggate.server.upstream`) take their plan and their
:class:`~pggate.proto.backend.BackendLogin` from here, so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from pggate.conninfo import (
    BackendTarget,
    TlsSettings,
    backend_target,
    default_passfile,
    read_pgpass,
    unsupported_by_pggate,
)
from pggate.hop.plan import ConnectPlan, SslMode, TargetSessionAttrs
from pggate.proto.backend import AuthPolicy, BackendLogin, ChannelBinding, LinkSecurity, RequireAuth
from pggate.tls.client import BackendTls, BackendTlsSettings

if TYPE_CHECKING:
    from pggate.conninfo import BackendAddress

# The role pggate logs in as for its own look-ups when the conninfo names no user.
DEFAULT_ROLE = "postgres"


@dataclass(frozen=True, slots=True)
class Route:
    """How to reach the backend: ``tls`` is None when no host can use TLS (sslmode=disable or
    only Unix sockets). Built once per configuration, with the snapshot."""

    target: BackendTarget
    tls: BackendTls | None = None
    max_iterations: int = 100_000

    @property
    def addresses(self) -> tuple[BackendAddress, ...]:
        return self.target.addresses()

    @property
    def connect_timeout(self) -> float | None:
        return self.target.connect_timeout

    def describe(self) -> str:
        return self.target.describe()

    def plan(self, order: Sequence[int] | None = None) -> ConnectPlan:
        """A fresh walk over the hosts; ``order`` is the caller's shuffle (load_balance_hosts)."""
        addresses = self.addresses
        return ConnectPlan(
            addresses,
            cast(SslMode, self.target.sslmode),
            self.target.settings.tls.sslnegotiation == "direct",
            cast(TargetSessionAttrs, self.target.target_session_attrs),
            list(order) if order is not None else list(range(len(addresses))),
        )

    def plan_for(self, address: BackendAddress) -> ConnectPlan:
        """A walk over ``address`` alone that takes it whatever its role (a cancel, or a
        terminate, must reach the host the session runs on)."""
        plan = self.plan(order=[self.addresses.index(address)])
        plan.target_session_attrs = "any"
        return plan

    def auth_policy(self) -> AuthPolicy:
        settings = self.target.settings
        required = settings.require_auth
        return AuthPolicy(
            channel_binding=cast(ChannelBinding, settings.channel_binding),
            require_auth=None
            if required.text is None
            else RequireAuth.from_methods(
                required.text,
                required.methods,
                allow_none=required.allow_none,
                names_password=required.names_password,
            ),
            max_iterations=self.max_iterations,
        )

    def login(
        self,
        address: BackendAddress,
        user: str,
        parameters: Mapping[str, str],
        link: LinkSecurity,
        scram_keys: tuple[bytes, bytes] | None = None,
    ) -> BackendLogin:
        """pggate logging in to ``address`` as ``user``. The conninfo's password (or the
        passfile's for that host) is pggate's own role's, used only for that role;
        ``scram_keys`` (from the client's SCRAM login) answer a backend that asks for SCRAM.
        The conninfo's ``options`` go in the startup packet, as libpq sends them, ahead of a
        client's own (the server applies them in order, so the client's win a tie)."""
        params = dict(parameters)
        options = self.target.settings.options
        if options:
            mine = params.get("options")
            params["options"] = f"{options} {mine}" if mine else options
        return BackendLogin(
            user=user,
            parameters=params,
            password=address.password if user == address.user else None,
            scram_keys=scram_keys,
            policy=self.auth_policy(),
            link=link,
        )


def tls_settings(tls: TlsSettings, sslmode: str) -> BackendTlsSettings:
    """The conninfo's TLS keywords as the TLS client takes them."""
    return BackendTlsSettings(
        sslmode=sslmode,
        sslnegotiation=tls.sslnegotiation,
        sslrootcert=tls.sslrootcert,
        sslcert=tls.sslcert,
        sslkey=tls.sslkey,
        sslpassword=tls.sslpassword,
        sslcrl=tls.sslcrl,
        sslcrldir=tls.sslcrldir,
        ssl_min_protocol_version=tls.min_protocol_version,
        ssl_max_protocol_version=tls.max_protocol_version,
        sslsni=tls.sslsni,
    )


def checked_target(text: str) -> tuple[BackendTarget, BackendTls | None]:
    """The conninfo validated whole: libpq's rules, what pggate cannot do yet, and the TLS
    files it names (loaded into the context now, so a missing root certificate is a
    configuration error naming pggate.conf's line, not a failure at a client's login)."""
    target = backend_target(text)
    problem = unsupported_by_pggate(target)
    if problem is not None:
        raise problem
    uses_tls = target.sslmode != "disable" and any(not a.is_unix_socket for a in target.addresses())
    tls = BackendTls.build(tls_settings(target.settings.tls, target.sslmode)) if uses_tls else None
    return target, tls


def build_route(text: str, *, max_iterations: int) -> Route:
    """Validate the ``backend`` conninfo and build what reaching it needs, once.

    The passfile (``passfile``, else ``~/.pgpass``) fills in each host's password when the
    conninfo names none, as libpq's pqConnectOptions2 does; the TLS context is built here so a
    missing root certificate or key is a configuration error at start or reload, not a
    failure at a client's login.
    """
    target = backend_target(text)
    problem = unsupported_by_pggate(target)
    if problem is not None:
        raise problem
    if not target.password:
        path = target.passfile or default_passfile()
        if path is not None:
            target = target.with_pgpass(read_pgpass(path), target.user or DEFAULT_ROLE)
    uses_tls = target.sslmode != "disable" and any(not a.is_unix_socket for a in target.addresses())
    tls = BackendTls.build(tls_settings(target.settings.tls, target.sslmode)) if uses_tls else None
    return Route(target, tls, max_iterations)


__all__ = ["DEFAULT_ROLE", "Route", "build_route", "checked_target", "tls_settings"]

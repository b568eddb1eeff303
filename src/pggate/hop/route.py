"""The backend of one snapshot: the conninfo, its TLS context, pggate's GSSAPI initiator
credentials, and what a login may accept.

Both executors of a backend login (a client's session, :mod:`pggate.server.session`, and
pggate's own catalog look-ups, :mod:`pggate.server.upstream`) take their plan and their
:class:`~pggate.proto.backend.BackendLogin` from here, so they cannot disagree.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

from pggate.conninfo import (
    BackendTarget,
    TlsSettings,
    backend_target,
    default_passfile,
    read_pgpass,
    unsupported_by_pggate,
)
from pggate.hop.plan import ConnectPlan, GssEncMode, SslMode, TargetSessionAttrs
from pggate.proto.backend import AuthPolicy, BackendLogin, ChannelBinding, LinkSecurity, RequireAuth
from pggate.tls.client import BackendTls, BackendTlsSettings
from pggate.transport.gss_client import ClientCredentials, GssAuthInitiator

if TYPE_CHECKING:
    from pggate.conninfo import BackendAddress

log = logging.getLogger("pggate.backend")

# The role pggate logs in as for its own look-ups when the conninfo names no user.
DEFAULT_ROLE = "postgres"
# How long "no GSSAPI credentials" is believed: libpq asks at every connection, which costs
# about 0.1 ms when there is no credential cache; a gateway with the default gssencmode=prefer
# and no Kerberos at all would pay it for every backend connection. Credentials that appear
# (a kinit, a keytab put in place) are seen within this time.
NO_CREDENTIALS_TTL = 1.0


class CredentialProbe:
    """pg_GSS_have_cred_cache's answer for one route, a "no" remembered briefly."""

    __slots__ = ("_until",)

    def __init__(self) -> None:
        self._until = 0.0

    def have(self, gss: ClientCredentials) -> bool:
        now = time.monotonic()
        if now < self._until:
            return False
        if gss.acquire() is not None:
            return True
        self._until = now + NO_CREDENTIALS_TTL
        return False


@dataclass(frozen=True, slots=True)
class Route:
    """How to reach the backend: ``tls`` is None when no host can use TLS (sslmode=disable or
    only Unix sockets); ``gss`` is where pggate's GSSAPI initiator credentials come from
    (None: pggate is no GSSAPI client at all, as a libpq built without GSSAPI). Built once per
    configuration, with the snapshot."""

    target: BackendTarget
    tls: BackendTls | None = None
    max_iterations: int = 100_000
    gss: ClientCredentials | None = None
    _probe: CredentialProbe = field(default_factory=CredentialProbe, compare=False, repr=False)
    # Derived once here, not on every backend connection.
    addresses: tuple[BackendAddress, ...] = field(init=False, compare=False, repr=False)
    _policy: AuthPolicy = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "addresses", self.target.addresses())
        object.__setattr__(self, "_policy", self._auth_policy())

    @property
    def connect_timeout(self) -> float | None:
        return self.target.connect_timeout

    def describe(self) -> str:
        return self.target.describe()

    def plan(self, order: Sequence[int] | None = None) -> ConnectPlan:
        """A fresh walk over the hosts; ``order`` is the caller's shuffle (load_balance_hosts).

        Whether GSSAPI credentials can be acquired is asked here, once per walk, and only when
        GSSAPI encryption could be tried (libpq asks ``pg_GSS_have_cred_cache`` before each
        connection; the answer does not change within a login)."""
        addresses = self.addresses
        gssencmode = cast(GssEncMode, self.target.settings.gssencmode)
        return ConnectPlan(
            addresses,
            cast(SslMode, self.target.sslmode),
            self.target.settings.tls.sslnegotiation == "direct",
            cast(TargetSessionAttrs, self.target.target_session_attrs),
            list(order) if order is not None else list(range(len(addresses))),
            gssencmode=gssencmode,
            gss_credentials=gssencmode != "disable" and self.gss_credentials(addresses),
        )

    def gss_credentials(self, addresses: Sequence[BackendAddress]) -> bool:
        """pg_GSS_have_cred_cache, for a walk over ``addresses`` (never asked for Unix
        sockets only: libpq tries no GSSAPI encryption there)."""
        if self.gss is None or all(a.is_unix_socket for a in addresses):
            return False
        return self._probe.have(self.gss)

    def plan_for(self, address: BackendAddress) -> ConnectPlan:
        """A walk over ``address`` alone that takes it whatever its role (a cancel, or a
        terminate, must reach the host the session runs on)."""
        plan = self.plan(order=[self.addresses.index(address)])
        plan.target_session_attrs = "any"
        return plan

    def auth_policy(self) -> AuthPolicy:
        return self._policy

    def _auth_policy(self) -> AuthPolicy:
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
            policy=self._policy,
            link=link,
            # pg_GSS_startup names the host entry (None for a hostaddr-only one).
            gss=None
            if self.gss is None
            else GssAuthInitiator(self.gss, address.settings.krbsrvname, address.server_name),
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


def uses_tls(target: BackendTarget) -> bool:
    """Whether any attempt can be TLS: not with sslmode=disable, nor on Unix sockets, nor with
    gssencmode=require (libpq allows GSSAPI encryption only then)."""
    return (
        target.sslmode != "disable"
        and target.settings.gssencmode != "require"
        and any(not a.is_unix_socket for a in target.addresses())
    )


def checked_target(text: str) -> tuple[BackendTarget, BackendTls | None]:
    """The conninfo validated whole: libpq's rules, what pggate cannot do yet, and the TLS
    files it names (loaded into the context now, so a missing root certificate is a
    configuration error naming pggate.conf's line, not a failure at a client's login)."""
    target = backend_target(text)
    problem = unsupported_by_pggate(target)
    if problem is not None:
        raise problem
    tls = (
        BackendTls.build(tls_settings(target.settings.tls, target.sslmode))
        if uses_tls(target)
        else None
    )
    return target, tls


def client_credentials(keyfile: Path | None) -> ClientCredentials:
    """``backend_krb_client_keyfile`` as initiator credentials: None means GSSAPI's default
    ones (libpq's). A keytab pggate cannot read is logged; GSSAPI then finds no credentials,
    as libpq finds no credential cache."""
    if keyfile is None:
        return ClientCredentials()
    if not os.access(keyfile, os.R_OK):
        log.warning('could not read Kerberos client keytab "%s"', keyfile)
    return ClientCredentials(keytab=f"FILE:{keyfile}")


def build_route(text: str, *, max_iterations: int, client_keyfile: Path | None = None) -> Route:
    """Validate the ``backend`` conninfo and build what reaching it needs, once.

    The passfile (``passfile``, else ``~/.pgpass``) fills in each host's password when the
    conninfo names none, as libpq's pqConnectOptions2 does; the TLS context is built here so a
    missing root certificate or key is a configuration error at start or reload, not a
    failure at a client's login. ``client_keyfile`` is ``backend_krb_client_keyfile``'s
    path (None: GSSAPI's default initiator credentials).
    """
    target = backend_target(text)
    problem = unsupported_by_pggate(target)
    if problem is not None:
        raise problem
    if not target.password:
        path = target.passfile or default_passfile()
        if path is not None:
            target = target.with_pgpass(read_pgpass(path), target.user or DEFAULT_ROLE)
    tls = (
        BackendTls.build(tls_settings(target.settings.tls, target.sslmode))
        if uses_tls(target)
        else None
    )
    return Route(target, tls, max_iterations, client_credentials(client_keyfile))


__all__ = [
    "DEFAULT_ROLE",
    "Route",
    "build_route",
    "checked_target",
    "client_credentials",
    "tls_settings",
]

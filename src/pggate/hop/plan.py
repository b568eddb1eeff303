"""Which backend to try next, and how: libpq's host and encryption iteration (sans-IO).

pggate reaches its backend the way libpq would with the same conninfo. ``PQconnectPoll``
(fe-connect.c) walks the host list (shuffled once with ``load_balance_hosts=random``) and, for
each host, the encryption methods ``gssencmode`` and ``sslmode`` allow, in libpq's order
(``init_allowed_encryption_methods``, ``select_next_encryption_method``): GSSAPI encryption
first, but only when GSSAPI initiator credentials can be acquired (``pg_GSS_have_cred_cache``:
an input here, ``gss_credentials``, so that this class stays sans-IO); then ``allow`` tries
plaintext before TLS, every other sslmode TLS before plaintext. ``gssencmode=require`` allows
GSSAPI only; ``prefer`` (libpq's default) adds TLS and plaintext as sslmode allows them. As
libpq documents it, a GSSAPI-encrypted connection is used in preference to TLS whatever
sslmode says (verify-full included: Kerberos authenticates the server); set
``gssencmode=disable`` to force TLS where there are credentials.
What happens after each outcome is decided here, as libpq decides it:

- ``gssencmode=require`` and no credentials: the end, before any connection, with libpq's
  ``GSSAPI encryption required but no credential cache`` (its ``error_return``);
- the host cannot be reached (refused, unreachable, timed out, name not resolved): next host;
- the server answers an SSLRequest or a GSSENCRequest with ``N``
  (``ENCRYPTION_NEGOTIATION_FAILED``): the next method on the *same* connection (a
  new one for direct TLS), else an error (``server does not support SSL, but SSL was
  required``, ``server doesn't support GSSAPI encryption, but it was required``);
  with direct TLS there is no ``N``;
- the TLS or GSSAPI handshake fails, the server answers a GSSENCRequest with an error (a
  pre-12 server), or it refuses the login with an ErrorResponse (``CONNECTION_FAILED``): the
  next method on a *new* connection, else the error ends it;
- the server says 57P03 (``the database system is starting up``): next host; after the last
  one, that refusal ends it (relayed, so the client knows to retry);
- the login succeeds but the server is not what ``target_session_attrs`` asks for: next host;
  after the last host, ``prefer-standby`` starts a second pass that takes any server.

A refusal that ends it is not carried to the next host, because libpq does not (its
``error_return`` is final): a wrong password on the first host must not be tried on the second.

Every failure is kept in libpq's words (``connection to server at "h", port p failed: ...``)
for pggate's log; the client only ever sees 08006 or the backend's own ErrorResponse.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from pggate.proto import codes

SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
GssEncMode = Literal["disable", "prefer", "require"]
TargetSessionAttrs = Literal[
    "any", "read-write", "read-only", "primary", "standby", "prefer-standby"
]


class Endpoint(Protocol):
    """One host of the conninfo, as the plan needs to see it."""

    @property
    def is_unix_socket(self) -> bool: ...

    def describe(self) -> str: ...


class Encryption(enum.Enum):
    PLAIN = "plaintext"
    TLS = "TLS"
    GSS = "GSSAPI"


# libpq's texts for a gssencmode=require that cannot be met before any connection is made.
NO_CREDENTIAL_CACHE = "GSSAPI encryption required but no credential cache"
GSS_OVER_LOCAL_SOCKET = "GSSAPI encryption required but it is not supported over a local socket"


@dataclass(frozen=True, slots=True)
class Attempt:
    """Connect to ``hosts[host]`` (or keep the current connection, ``same_connection``) and
    log in with ``encryption``; ``direct`` TLS starts the handshake without an SSLRequest."""

    host: int
    encryption: Encryption
    direct: bool = False
    same_connection: bool = False


@dataclass(frozen=True, slots=True)
class GiveUp:
    """No attempt is left; ``reasons`` in libpq's words, one per failed try, oldest first.
    ``refusal`` is the backend's own ErrorResponse body when that ended it (to relay)."""

    reasons: tuple[str, ...]
    refusal: bytes | None = None

    @property
    def detail(self) -> str:
        return "\n".join(self.reasons)


Step = Attempt | GiveUp


def _methods(
    sslmode: SslMode,
    unix_socket: bool,
    gssencmode: GssEncMode = "disable",
    gss_credentials: bool = False,
) -> tuple[Encryption, ...]:
    """init_allowed_encryption_methods + select_next_encryption_method's order.

    GSSAPI is tried before TLS, and only with credentials (without them libpq drops it from
    the allowed methods); ``gssencmode=require`` allows nothing else, ``prefer`` lets sslmode
    add TLS and plaintext. A Unix socket is plaintext only (its gssencmode=require is refused
    before this is asked: :data:`GSS_OVER_LOCAL_SOCKET`)."""
    if unix_socket:
        return (Encryption.PLAIN,)
    gss = (Encryption.GSS,) if gssencmode != "disable" and gss_credentials else ()
    if gssencmode == "require":
        return gss
    if sslmode == "disable":
        return (*gss, Encryption.PLAIN)
    if sslmode == "allow":
        return (*gss, Encryption.PLAIN, Encryption.TLS)
    if sslmode == "prefer":
        return (*gss, Encryption.TLS, Encryption.PLAIN)
    return (*gss, Encryption.TLS)


def server_type_problem(wanted: TargetSessionAttrs, parameters: Mapping[str, str]) -> str | None:
    """CONNECTION_CHECK_TARGET: None when the server suits ``wanted``, else libpq's text.

    libpq reads ``default_transaction_read_only`` and ``in_hot_standby`` from the server's
    ParameterStatus messages (PostgreSQL 14+ reports both) and falls back to a query on older
    servers; pggate refuses those servers for any setting but ``any`` (see the message).
    """
    if wanted == "any":
        return None
    hot_standby = parameters.get("in_hot_standby")
    read_only = parameters.get("default_transaction_read_only")
    if hot_standby is None or (wanted in ("read-write", "read-only") and read_only is None):
        return (
            f"target_session_attrs={wanted} needs a server that reports in_hot_standby and "
            "default_transaction_read_only (PostgreSQL 14 or later)"
        )
    standby = hot_standby == "on"
    if wanted in ("read-write", "read-only"):
        read_only_server = standby or read_only == "on"
        if wanted == "read-write" and read_only_server:
            return "session is read-only"
        if wanted == "read-only" and not read_only_server:
            return "session is not read-only"
        return None
    if wanted == "primary" and standby:
        return "server is in hot standby mode"
    if wanted in ("standby", "prefer-standby") and not standby:
        return "server is not in hot standby mode"
    return None


@dataclass(slots=True)
class ConnectPlan:
    """One connection's walk over hosts and encryption methods (PQconnectPoll's decisions).

    ``order`` is the host order (a permutation of ``range(len(hosts))``; the caller shuffles
    it for ``load_balance_hosts=random``, so this class stays deterministic).
    ``gss_credentials`` is whether GSSAPI initiator credentials could be acquired
    (``pg_GSS_have_cred_cache``), asked by the caller; it matters unless gssencmode=disable.
    """

    hosts: Sequence[Endpoint]
    sslmode: SslMode
    direct: bool
    target_session_attrs: TargetSessionAttrs
    order: Sequence[int]
    gssencmode: GssEncMode = "disable"
    gss_credentials: bool = False
    reasons: list[str] = field(default_factory=list)
    _position: int = 0
    _methods: tuple[Encryption, ...] = ()
    _method: int = 0
    _second_pass: bool = False

    def start(self) -> Step:
        """The first attempt."""
        if not self.hosts:
            return GiveUp(("no backend host to connect to",))
        self._position = -1
        return self._next_host()

    @property
    def current(self) -> Attempt:
        encryption = self._methods[self._method]
        return Attempt(
            self.order[self._position],
            encryption,
            direct=self.direct and encryption is Encryption.TLS,
        )

    @property
    def wanted(self) -> TargetSessionAttrs:
        """What the current pass asks of a server (``any`` in prefer-standby's second pass)."""
        return "any" if self._second_pass else self.target_session_attrs

    # --- outcomes -----------------------------------------------------------------------------

    def unreachable(self, reason: str) -> Step:
        """The host could not be reached (connect failed or timed out): next host."""
        self._note(reason)
        return self._next_host()

    def tls_refused(self) -> Step:
        """The server answered SSLRequest with ``N``."""
        return self._negotiation_failed("server does not support SSL, but SSL was required")

    def gss_refused(self) -> Step:
        """The server answered GSSENCRequest with ``N``."""
        return self._negotiation_failed(
            "server doesn't support GSSAPI encryption, but it was required"
        )

    def link_failed(self, reason: str) -> Step:
        """The TLS or GSSAPI handshake or its checks failed, or the server answered a
        GSSENCRequest with an error (CONNECTION_FAILED)."""
        self._note(reason)
        nxt = self._next_method()
        return nxt if nxt is not None else self._give_up()

    def broken(self, reason: str) -> GiveUp:
        """A failure libpq does not retry at all (its ``error_return``): the end, this host
        named with its reason."""
        self._note(reason)
        return self._give_up()

    def login_refused(self, sqlstate: str, message: str, error_body: bytes) -> Step:
        """The server sent an ErrorResponse before the login completed."""
        self._note(message)
        if sqlstate == codes.SQLSTATE_CANNOT_CONNECT_NOW:
            # The last host starting up (or shutting down, or in recovery) has the last word:
            # its 57P03 tells the client to come back, where 08006 would say "broken".
            after = self._next_host()
            return self._give_up(error_body) if isinstance(after, GiveUp) else after
        nxt = self._next_method()
        return nxt if nxt is not None else self._give_up(error_body)

    def logged_in(self, parameters: Mapping[str, str]) -> Step | None:
        """After ReadyForQuery: None to keep this server, else what to try instead."""
        problem = server_type_problem(self.wanted, parameters)
        if problem is None:
            return None
        self._note(problem)
        return self._next_host()

    # --- moves ------------------------------------------------------------------------------

    def _note(self, reason: str) -> None:
        where = self.hosts[self.order[self._position]].describe()
        self.reasons.append(f"connection to {where} failed: {reason}")

    def _give_up(self, refusal: bytes | None = None) -> GiveUp:
        return GiveUp(tuple(self.reasons), refusal)

    def _negotiation_failed(self, text: str) -> Step:
        """encryption_negotiation_failed: the next method, on the same connection (it is still
        in a known state) unless that is direct TLS; none left ends it with ``text``."""
        nxt = self._next_method()
        if nxt is None:
            self._note(text)
            return self._give_up()
        if nxt.direct:  # an existing connection cannot be reused for direct TLS
            return nxt
        return Attempt(nxt.host, nxt.encryption, same_connection=True)

    def _next_method(self) -> Attempt | None:
        if self._method + 1 >= len(self._methods):
            return None
        self._method += 1
        return self.current

    def _next_host(self) -> Step:
        self._position += 1
        if self._position >= len(self.order):
            if self.target_session_attrs != "prefer-standby" or self._second_pass:
                return self._give_up()
            self._second_pass = True  # PQconnectPoll's SERVER_TYPE_PREFER_STANDBY_PASS2
            self._position = 0
        host = self.hosts[self.order[self._position]]
        if self.gssencmode == "require":
            # Checked for each host before connecting, and final (no host prefix either: the
            # host is named only once a connection is attempted).
            if host.is_unix_socket:
                return self._doomed(GSS_OVER_LOCAL_SOCKET)
            if not self.gss_credentials:
                return self._doomed(NO_CREDENTIAL_CACHE)
        self._methods = _methods(
            self.sslmode, host.is_unix_socket, self.gssencmode, self.gss_credentials
        )
        self._method = 0
        return self.current

    def _doomed(self, text: str) -> GiveUp:
        self.reasons.append(text)
        return self._give_up()


__all__ = [
    "GSS_OVER_LOCAL_SOCKET",
    "NO_CREDENTIAL_CACHE",
    "Attempt",
    "ConnectPlan",
    "Encryption",
    "Endpoint",
    "GiveUp",
    "GssEncMode",
    "SslMode",
    "Step",
    "TargetSessionAttrs",
    "server_type_problem",
]

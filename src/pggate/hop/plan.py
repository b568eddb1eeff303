"""Which backend to try next, and how: libpq's host and encryption iteration (sans-IO).

pggate reaches its backend the way libpq would with the same conninfo. ``PQconnectPoll``
(fe-connect.c) walks the host list (shuffled once with ``load_balance_hosts=random``) and, for
each host, the encryption methods ``sslmode`` allows, in its order (``init_allowed_encryption_
methods``, ``select_next_encryption_method``: ``allow`` tries plaintext first, ``prefer`` TLS
first). What happens after each outcome is decided here, as libpq decides it:

- the host cannot be reached (refused, unreachable, timed out, name not resolved): next host;
- the server answers an SSLRequest with ``N`` (``ENCRYPTION_NEGOTIATION_FAILED``): the next
  method on the *same* connection when that is plaintext, else an error
  (``server does not support SSL, but SSL was required``); with direct TLS there is no ``N``;
- the TLS handshake fails, or the server refuses the login with an ErrorResponse
  (``CONNECTION_FAILED``): the next method on a *new* connection, else the error ends it;
- the server says 57P03 (``the database system is starting up``): next host;
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


def _methods(sslmode: SslMode, unix_socket: bool) -> tuple[Encryption, ...]:
    """init_allowed_encryption_methods + select_next_encryption_method's order (no GSS)."""
    if unix_socket or sslmode == "disable":
        return (Encryption.PLAIN,)
    if sslmode == "allow":
        return (Encryption.PLAIN, Encryption.TLS)
    if sslmode == "prefer":
        return (Encryption.TLS, Encryption.PLAIN)
    return (Encryption.TLS,)


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
    """

    hosts: Sequence[Endpoint]
    sslmode: SslMode
    direct: bool
    target_session_attrs: TargetSessionAttrs
    order: Sequence[int]
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
        nxt = self._next_method()
        if nxt is None:
            self._note("server does not support SSL, but SSL was required")
            return self._give_up()
        # ENCRYPTION_NEGOTIATION_FAILED case 1: the connection is still good for plaintext.
        return Attempt(nxt.host, nxt.encryption, same_connection=True)

    def link_failed(self, reason: str) -> Step:
        """The TLS handshake or its checks failed (CONNECTION_FAILED)."""
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
            return self._next_host()
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
        self._methods = _methods(self.sslmode, host.is_unix_socket)
        self._method = 0
        return self.current


__all__ = [
    "Attempt",
    "ConnectPlan",
    "Encryption",
    "Endpoint",
    "GiveUp",
    "SslMode",
    "Step",
    "TargetSessionAttrs",
    "server_type_problem",
]

"""The validated ``backend`` conninfo: a frozen model of every setting pggate acts on.

``BackendTarget`` is the whole conninfo: libpq's host list (pqConnectOptions2's
``pg_conn_host`` array, one ``HostSpec`` per entry) and the settings shared by every host.
``BackendAddress`` is one concrete endpoint with everything needed to connect to it;
``BackendTarget.addresses()`` gives one per host, in conninfo order.

``None`` means "not set" where libpq then uses a default of its own (a file under
``~/.postgresql/``, the operating system's value for a TCP option): those defaults are the I/O
layer's to apply. Secrets are left out of every ``repr``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from pggate.conninfo.keywords import DEFAULT_PORT, DEFAULT_SOCKET_DIR
from pggate.conninfo.pgpass import PgpassEntry, lookup_password

DEFAULT_CONNECT_TIMEOUT = 10.0  # pggate's own; libpq's default is to wait as long as the OS does
DEFAULT_APPLICATION_NAME = "pggate"

SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
SSLNEGOTIATIONS = ("postgres", "direct")
CHANNEL_BINDINGS = ("disable", "prefer", "require")
GSSENCMODES = ("disable", "prefer", "require")
TARGET_SESSION_ATTRS = ("any", "read-write", "read-only", "primary", "standby", "prefer-standby")
LOAD_BALANCE_HOSTS = ("disable", "random")
TLS_VERSIONS = ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")  # sslVerifyProtocolVersion, in order
AUTH_METHODS = ("password", "md5", "gss", "sspi", "scram-sha-256", "oauth")  # require_auth

# libpq's ~/.postgresql/ files, used when the keyword is not set (fe-secure-openssl.c).
USER_TLS_DIR = ".postgresql"
DEFAULT_SSLROOTCERT = "root.crt"
DEFAULT_SSLCRL = "root.crl"
DEFAULT_SSLCERT = "postgresql.crt"
DEFAULT_SSLKEY = "postgresql.key"

# sizeof(sun_path) - 1: the longest Unix-domain socket path (UNIXSOCK_PATH_BUFLEN).
MAX_SOCKET_PATH = 107


def socket_file(directory: str, port: int) -> str:
    """UNIXSOCK_PATH: the socket file of ``port`` in ``directory``."""
    return f"{directory}/.s.PGSQL.{port}"


def is_unix_socket_path(host: str) -> bool:
    """is_unixsock_path: an absolute path, or ``@name`` (Linux's abstract namespace)."""
    return host.startswith(("/", "@"))


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """The TLS keywords, minus sslmode (which ``BackendAddress`` gives per endpoint)."""

    sslnegotiation: str = "postgres"  # "direct": TLS first, ALPN "postgresql"
    sslrootcert: str | None = None  # a file, or "system" (the OS's trusted roots)
    sslcert: str | None = None
    sslkey: str | None = None
    sslpassword: str | None = field(default=None, repr=False)
    sslcrl: str | None = None
    sslcrldir: str | None = None
    sslsni: bool = True
    # TLS_VERSIONS spellings; None: no bound (libpq's default minimum is TLSv1.2).
    min_protocol_version: str | None = "TLSv1.2"
    max_protocol_version: str | None = None

    @property
    def system_roots(self) -> bool:
        """``sslrootcert=system``: the OS's trusted roots, and sslmode verify-full only."""
        return self.sslrootcert == "system"


@dataclass(frozen=True, slots=True)
class RequireAuth:
    """require_auth (pqConnectOptions2): the authentication requests the backend may make.

    ``methods`` is drawn from AUTH_METHODS; ``allow_none`` says whether the backend may let
    pggate in without any request (trust, or a cert-only login): libpq's ``!auth_required``.
    Unset, everything is allowed.
    """

    methods: frozenset[str] = frozenset(AUTH_METHODS)
    allow_none: bool = True
    text: str | None = None  # as written (libpq quotes it in its refusals); None: unset
    names_password: bool = False  # ``password`` listed itself, not merely left un-negated

    def allows(self, method: str) -> bool:
        """Whether ``method`` (one of AUTH_METHODS, or "none") may be used."""
        return self.allow_none if method == "none" else method in self.methods


@dataclass(frozen=True, slots=True)
class TcpSettings:
    """keepalives*, tcp_user_timeout: socket options for TCP endpoints (never Unix sockets).

    ``None`` leaves the operating system's value; a negative value was raised to 0, as libpq
    does before its setsockopt.
    """

    keepalives: bool = True
    keepalives_idle: int | None = None  # seconds (TCP_KEEPIDLE)
    keepalives_interval: int | None = None  # seconds (TCP_KEEPINTVL)
    keepalives_count: int | None = None  # probes (TCP_KEEPCNT)
    user_timeout: int | None = None  # milliseconds (TCP_USER_TIMEOUT)


@dataclass(frozen=True, slots=True)
class BackendSettings:
    """The settings every host of the conninfo shares, beyond BackendAddress' own fields."""

    tls: TlsSettings = TlsSettings()
    channel_binding: str = "prefer"  # CHANNEL_BINDINGS
    require_auth: RequireAuth = RequireAuth()
    gssencmode: str = "prefer"  # GSSENCMODES; libpq tries it only with a credential cache
    krbsrvname: str = "postgres"
    tcp: TcpSettings = TcpSettings()
    options: str = ""  # the startup packet's "options" (command-line options for the server)


DEFAULT_SETTINGS = BackendSettings()


@dataclass(frozen=True, slots=True)
class BackendAddress:
    """One backend endpoint and everything pggate needs to connect to it.

    ``host`` is where to connect: a socket directory (``/dir``, or ``@name`` in Linux's
    abstract namespace) or a TCP host; when libpq's ``hostaddr`` gave the endpoint, ``host``
    is that numeric address and ``host_name`` the ``host`` entry written beside it.
    ``sslmode`` is the effective one: "disable" on a Unix socket, where libpq uses no TLS.
    """

    host: str
    port: int
    user: str | None = None  # pggate's own role, used for catalog look-ups
    dbname: str | None = None
    password: str | None = field(default=None, repr=False)
    sslmode: str = "disable"
    # None: wait as long as the OS does (libpq's connect_timeout=0); pggate's default is 10 s.
    connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT
    application_name: str = DEFAULT_APPLICATION_NAME
    hostaddr: str | None = None
    host_name: str | None = None
    settings: BackendSettings = DEFAULT_SETTINGS

    @property
    def is_unix_socket(self) -> bool:
        return is_unix_socket_path(self.host)

    @property
    def socket_path(self) -> str:
        """The socket file; an abstract ``@name`` starts with NUL, as libpq's getaddrinfo_unix."""
        path = socket_file(self.host, self.port)
        return "\0" + path[1:] if path.startswith("@") else path

    @property
    def server_name(self) -> str | None:
        """The name TLS verifies (verify-full), sends as SNI and GSSAPI asks a ticket for:
        libpq's ``host`` entry; None when the endpoint has only a ``hostaddr``."""
        return self.host if self.hostaddr is None else self.host_name

    @property
    def gssencmode(self) -> str:
        """The effective gssencmode: "disable" on a Unix socket, as libpq."""
        return "disable" if self.is_unix_socket else self.settings.gssencmode

    def describe(self) -> str:
        """A log-safe description (never the password)."""
        if self.is_unix_socket:
            return f'Unix socket "{socket_file(self.host, self.port)}"'
        if self.hostaddr is not None and self.host_name:
            return f'host "{self.host_name}" ({self.host}) port {self.port}'
        return f'host "{self.host}" port {self.port}'


@dataclass(frozen=True, slots=True)
class HostSpec:
    """One entry of libpq's host list: ``host``, ``hostaddr`` and ``port`` at one position.

    ``host`` is None when the entry gave only a ``hostaddr``; with neither, it is the default
    socket directory. ``port_text`` is the port as written ("" for the default), which is
    what a pgpass line is matched against. ``password`` comes from the passfile
    (``BackendTarget.with_pgpass``), as libpq looks one up for each host.
    """

    host: str | None
    hostaddr: str | None = None
    port: int = DEFAULT_PORT
    port_text: str = ""
    password: str | None = field(default=None, repr=False)

    @property
    def kind(self) -> str:
        """libpq's pg_conn_host_type: "address", "unix" or "name"."""
        if self.hostaddr is not None:
            return "address"
        return "unix" if is_unix_socket_path(self.connect_host) else "name"

    @property
    def connect_host(self) -> str:
        """Where to connect: the hostaddr, else the host (a directory for a Unix socket)."""
        return self.hostaddr or self.host or DEFAULT_SOCKET_DIR

    @property
    def pgpass_host(self) -> str:
        """passwordFromFile's host: the host entry, else the hostaddr."""
        return self.host or self.connect_host


@dataclass(frozen=True, slots=True)
class BackendTarget:
    """The whole ``backend`` conninfo, validated as libpq 18's pqConnectOptions2 does.

    ``sslmode`` is the one configured (libpq's default "prefer", or "verify-full" when
    ``sslrootcert=system`` and no sslmode is written); each address has its effective one.
    With ``load_balance_hosts=random`` the caller shuffles ``addresses()`` for each
    connection, as libpq shuffles its host list for each PGconn.
    """

    hosts: tuple[HostSpec, ...]
    user: str | None = None
    dbname: str | None = None
    password: str | None = field(default=None, repr=False)
    passfile: str | None = None  # None: ~/.pgpass of the user pggate runs as
    sslmode: str = "prefer"
    connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT
    application_name: str = DEFAULT_APPLICATION_NAME
    target_session_attrs: str = "any"
    load_balance_hosts: str = "disable"
    settings: BackendSettings = DEFAULT_SETTINGS

    def addresses(self) -> tuple[BackendAddress, ...]:
        """One BackendAddress per host, in conninfo order."""
        return tuple(self._address(spec) for spec in self.hosts)

    def _address(self, spec: HostSpec) -> BackendAddress:
        host = spec.connect_host
        return BackendAddress(
            host=host,
            port=spec.port,
            user=self.user,
            dbname=self.dbname,
            password=self.password or spec.password,
            sslmode="disable" if is_unix_socket_path(host) else self.sslmode,
            connect_timeout=self.connect_timeout,
            application_name=self.application_name,
            hostaddr=spec.hostaddr,
            host_name=spec.host if spec.hostaddr is not None else None,
            settings=self.settings,
        )

    def with_pgpass(self, entries: Sequence[PgpassEntry], default_user: str) -> BackendTarget:
        """Each host's password from a passfile, when the conninfo names none (libpq's
        pqConnectOptions2). ``default_user`` is the role pggate logs in as when ``user`` is
        not set; the database defaults to the user, as in libpq."""
        if self.password:
            return self
        user = self.user or default_user
        dbname = self.dbname or user
        hosts = tuple(
            replace(
                spec,
                password=lookup_password(
                    entries, host=spec.pgpass_host, port=spec.port_text, dbname=dbname, user=user
                ),
            )
            for spec in self.hosts
        )
        return replace(self, hosts=hosts)

    def describe(self) -> str:
        """A log-safe description of every host."""
        return ", ".join(address.describe() for address in self.addresses())

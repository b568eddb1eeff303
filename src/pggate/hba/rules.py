"""pg_hba.conf lines as validated rules, and loading a whole file (``hba.c:parse_hba_line``,
``load_hba``).

Validation follows PostgreSQL 18 on Linux, with its error texts; any error refuses the whole
file (the caller keeps the previous policy on reload). Matching lives in ``match.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import EllipsisType

from pggate import gss_support
from pggate.errors import ConfigError
from pggate.hba.address import (
    AddressKind,
    AddressSpec,
    IPAddress,
    cidr_mask,
    parse_numeric_host,
)
from pggate.hba.match import ConnectionFacts, rejection_message, rule_matches
from pggate.hba.methods import UNSUPPORTED_METHODS, AuthMethod, ConnType
from pggate.hba.options import OptionState
from pggate.hba.rule import ClientCert, HbaRule
from pggate.hba.tokens import (
    AuthLine,
    AuthToken,
    Field,
    compile_token,
    parse_auth_file,
)
from pggate.pgtext import FileSource


@dataclass(frozen=True, slots=True)
class HbaPolicy:
    """A loaded pg_hba.conf: rules in order, first match wins, no fall-through."""

    rules: tuple[HbaRule, ...]
    needs_roles: bool = field(init=False)
    needs_hostname: bool = field(init=False)
    needs_local_interfaces: bool = field(init=False)

    def __post_init__(self) -> None:
        def any_token(pick: Callable[[HbaRule], Sequence[AuthToken]], *words: str) -> bool:
            return any(
                token.is_keyword(word)
                for rule in self.rules
                for token in pick(rule)
                for word in words
            )

        kinds = {rule.address.kind for rule in self.rules if rule.address is not None}
        roles = any_token(lambda r: r.databases, "samerole", "samegroup") or any(
            token.is_member_check for rule in self.rules for token in rule.users
        )
        object.__setattr__(self, "needs_roles", roles)
        object.__setattr__(self, "needs_hostname", AddressKind.HOSTNAME in kinds)
        object.__setattr__(
            self,
            "needs_local_interfaces",
            bool(kinds & {AddressKind.SAMEHOST, AddressKind.SAMENET}),
        )

    def find(self, facts: ConnectionFacts) -> HbaRule | None:
        """The first matching rule, or None (PostgreSQL's implicit reject)."""
        for rule in self.rules:
            if rule_matches(rule, facts):
                return rule
        return None

    def describe_rejection(
        self, facts: ConnectionFacts, rule: HbaRule | EllipsisType | None = ...
    ) -> str:
        """The FATAL text for a rejected connection: no matching line (``rule`` None) or a
        ``reject`` line. Without ``rule`` the policy finds it again."""
        found = self.find(facts) if isinstance(rule, EllipsisType) else rule
        return rejection_message(facts, found)


def load_hba(
    path: str,
    files: FileSource,
    *,
    ssl_enabled: bool,
    warn: Callable[[str], None],
    oauth_validator_libraries: Sequence[str] = (),
    gss_supported: Callable[[], bool] = gss_support.available,
) -> HbaPolicy:
    """Read, tokenize and validate pg_hba.conf; raises ConfigError (``AuthFileError`` listing
    every bad line) and reports PostgreSQL's load-time warnings through ``warn``.

    ``gss_supported`` says whether this installation can do GSSAPI (the extra pggate[gss]);
    it is asked only when a line needs GSSAPI, so a file without one never loads python-gssapi.
    """

    def parse(line: AuthLine) -> HbaRule:
        return parse_hba_line(
            line,
            ssl_enabled=ssl_enabled,
            warn=warn,
            oauth_validator_libraries=oauth_validator_libraries,
            gss_supported=gss_supported,
        )

    rules = parse_auth_file(path, files, warn, parse)
    if not rules:
        raise ConfigError(f'configuration file "{path}" contains no entries')
    return HbaPolicy(tuple(rules))


_CONN_TYPES = {t.value: t for t in ConnType}
_METHODS = {m.value: m for m in AuthMethod}


class _Fields:
    """Walks a line's fields, producing PostgreSQL's end-of-line errors."""

    def __init__(self, line: AuthLine) -> None:
        self.line = line
        self._iter: Iterator[Field] = iter(line.fields)

    def next(self, what: str) -> Field:
        field_ = next(self._iter, None)
        if field_ is None:
            raise self.line.config_error(f"end-of-line before {what}")
        return field_

    def single(self, what: str, multiple: str) -> AuthToken:
        tokens = self.next(what)
        if len(tokens) > 1:
            raise self.line.config_error(f"multiple values specified for {multiple}")
        return tokens[0]

    def rest(self) -> Iterator[Field]:
        return self._iter


def parse_hba_line(
    line: AuthLine,
    *,
    ssl_enabled: bool,
    warn: Callable[[str], None],
    oauth_validator_libraries: Sequence[str] = (),
    gss_supported: Callable[[], bool] = gss_support.available,
) -> HbaRule:
    """Validate one tokenized line; raises ConfigError with the line's file and number."""
    fields = _Fields(line)
    conn_token = fields.single("connection type", "connection type")
    conn_type = _CONN_TYPES.get(conn_token.string)
    if conn_type is None:
        raise line.config_error(f'invalid connection type "{conn_token.string}"')
    if conn_type is ConnType.HOSTSSL and not ssl_enabled:
        warn(str(line.config_error("hostssl record cannot match because SSL is disabled")))
    if conn_type is ConnType.HOSTGSSENC and not gss_supported():
        # hba.c without ENABLE_GSS: the line loads, and can never match.
        text = "hostgssenc record cannot match because GSSAPI is not supported by this build"
        warn(f"{line.config_error(text)}\nHINT:  {gss_support.HINT}")
    databases = tuple(compile_token(t, line) for t in fields.next("database specification"))
    users = tuple(compile_token(t, line) for t in fields.next("role specification"))
    address = None if conn_type is ConnType.LOCAL else _parse_address(fields)
    method = _parse_method(fields, conn_type, gss_supported)

    state = OptionState(method, conn_type, line.config_error, warn)
    for tokens in fields.rest():
        for token in tokens:
            name, eq, value = token.string.partition("=")
            if not eq:
                raise line.config_error(
                    f"authentication option not in name=value format: {token.string}"
                )
            state.add(name, value)
    state.finish(oauth_validator_libraries)

    values = state.values
    clientcert: ClientCert | None = "verify-full" if method is AuthMethod.CERT else None
    if clientcert is None and values.get("clientcert") in ("verify-ca", "verify-full"):
        clientcert = "verify-ca" if values["clientcert"] == "verify-ca" else "verify-full"
    return HbaRule(
        conn_type=conn_type,
        databases=databases,
        users=users,
        address=address,
        method=method,
        file=line.file,
        line_number=line.line_number,
        raw_line=line.raw_line,
        options=tuple(state.given),
        usermap=values.get("map"),
        clientcert=clientcert,
        clientname="DN" if values.get("clientname") == "DN" else "CN",
        # gss defaults to include_realm=1; "1" is the only true spelling.
        include_realm=values.get("include_realm", "1") == "1" and method is AuthMethod.GSS,
        krb_realm=values.get("krb_realm"),
    )


def _unsupported_method(line: AuthLine, name: str) -> ConfigError:
    return line.config_error(f'invalid authentication method "{name}": not supported by this build')


def _parse_address(fields: _Fields) -> AddressSpec:
    """The ADDRESS column (and the separate mask column when the address has no ``/``)."""
    line = fields.line
    token = fields.single("IP address specification", "host address")
    for keyword in (AddressKind.ALL, AddressKind.SAMEHOST, AddressKind.SAMENET):
        if token.is_keyword(keyword.value):
            return AddressSpec(keyword)
    host, slash, bits = token.string.partition("/")
    address = parse_numeric_host(host)
    if address is None:
        if slash:
            raise line.config_error(
                f'specifying both host name and CIDR mask is invalid: "{token.string}"'
            )
        return AddressSpec(AddressKind.HOSTNAME, hostname=host)
    mask: IPAddress | None
    if slash:
        mask = cidr_mask(bits, address)
        if mask is None:
            raise line.config_error(f'invalid CIDR mask in address "{token.string}"')
        return AddressSpec(AddressKind.IP, address=address, mask=mask)
    mask_token = fields.single("netmask specification", "netmask")
    mask = parse_numeric_host(mask_token.string)
    if mask is None:
        raise line.config_error(f'invalid IP mask "{mask_token.string}": Name or service not known')
    if mask.version != address.version:
        raise line.config_error("IP address and mask do not match")
    return AddressSpec(AddressKind.IP, address=address, mask=mask)


def _parse_method(
    fields: _Fields, conn_type: ConnType, gss_supported: Callable[[], bool]
) -> AuthMethod:
    line = fields.line
    name = fields.single("authentication method", "authentication type").string
    if name in UNSUPPORTED_METHODS:
        raise _unsupported_method(line, name)
    method = _METHODS.get(name)
    if method is None:
        raise line.config_error(f'invalid authentication method "{name}"')
    if method is AuthMethod.GSS and not gss_supported():
        # hba.c without ENABLE_GSS (unsupauth = "gss"); the HINT names what is missing.
        error = _unsupported_method(line, name)
        error.detail, error.hint = gss_support.missing_detail(), gss_support.HINT
        raise error
    local = conn_type is ConnType.LOCAL
    if local and method is AuthMethod.IDENT:
        # Backwards compatibility: ident over a Unix socket has always meant peer.
        method = AuthMethod.PEER
    if local and method is AuthMethod.GSS:
        raise line.config_error("gssapi authentication is not supported on local sockets")
    if not local and method is AuthMethod.PEER:
        raise line.config_error("peer authentication is only supported on local sockets")
    if conn_type is not ConnType.HOSTSSL and method is AuthMethod.CERT:
        raise line.config_error("cert authentication is only supported on hostssl connections")
    return method

"""Authentication options (``name=value`` after the method): ``hba.c:parse_hba_auth_opt``.

Every option PostgreSQL 18 knows is validated by name, by the method it belongs to and, where
PostgreSQL checks it at load time, by value. Method-specific requirements (LDAP bind modes,
RADIUS list lengths, OAuth issuer/scope/validator) are checked after all options are read.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pggate.errors import ConfigError
from pggate.hba.methods import AuthMethod, ConnType
from pggate.pgtext import split_identifier_string

M = AuthMethod
_LDAP = frozenset({M.LDAP})
_RADIUS = frozenset({M.RADIUS})
_OAUTH = frozenset({M.OAUTH})
_PAM = frozenset({M.PAM})
_GSS = frozenset({M.GSS})  # sspi is refused earlier on Linux, so "gss or sspi" is just gss
_NONE: frozenset[AuthMethod] = frozenset()

# option name -> (methods allowed, the method list as PostgreSQL words it)
_ALLOWED: dict[str, tuple[frozenset[AuthMethod], str]] = {
    "map": (
        frozenset({M.IDENT, M.PEER, M.GSS, M.CERT, M.OAUTH}),
        "ident, peer, gssapi, sspi, cert, and oauth",
    ),
    "pamservice": (_PAM, "pam"),
    "pam_use_hostname": (_PAM, "pam"),
    "krb_realm": (_GSS, "gssapi and sspi"),
    "include_realm": (_GSS, "gssapi and sspi"),
    "compat_realm": (_NONE, "sspi"),
    "upn_username": (_NONE, "sspi"),
    **{
        name: (_LDAP, "ldap")
        for name in (
            "ldapurl",
            "ldaptls",
            "ldapscheme",
            "ldapserver",
            "ldapport",
            "ldapbinddn",
            "ldapbindpasswd",
            "ldapsearchattribute",
            "ldapsearchfilter",
            "ldapbasedn",
            "ldapprefix",
            "ldapsuffix",
        )
    },
    **{
        name: (_RADIUS, "radius")
        for name in ("radiusservers", "radiusports", "radiussecrets", "radiusidentifiers")
    },
    **{name: (_OAUTH, "oauth") for name in ("issuer", "scope", "validator")},
    "delegate_ident_mapping": (_OAUTH, "oauth"),
}
_HOSTSSL_ONLY = ("clientcert", "clientname")


@dataclass(slots=True)
class OptionState:
    """Options of one line while it is being parsed (effective values, last one wins)."""

    method: AuthMethod
    conn_type: ConnType
    error: Callable[[str], ConfigError]
    warn: Callable[[str], None]
    given: list[tuple[str, str]] = field(default_factory=list)
    values: dict[str, str] = field(default_factory=dict)
    lists: dict[str, list[str]] = field(default_factory=dict)

    def add(self, name: str, value: str) -> None:
        """``parse_hba_auth_opt`` for one pair; raises ConfigError."""
        if name in _HOSTSSL_ONLY:
            if self.conn_type is not ConnType.HOSTSSL:
                raise self.error(f'{name} can only be configured for "hostssl" rows')
        elif name in _ALLOWED:
            methods, wording = _ALLOWED[name]
            if self.method not in methods:
                raise self.error(
                    f'authentication option "{name}" is only valid for authentication methods '
                    f"{wording}"
                )
        else:
            raise self.error(f'unrecognized authentication option name: "{name}"')
        check = _VALUE_CHECKS.get(name)
        if check is not None:
            check(self, value)
        self.given.append((name, value))
        self.values[name] = value

    def finish(self, oauth_validator_libraries: Sequence[str]) -> None:
        """Requirements that depend on the whole line (end of ``parse_hba_line``)."""
        if self.method is M.LDAP:
            self._finish_ldap()
        elif self.method is M.RADIUS:
            self._finish_radius()
        elif self.method is M.OAUTH:
            self._finish_oauth(oauth_validator_libraries)

    def _require(self, name: str) -> None:
        if name not in self.values:
            raise self.error(
                f'authentication method "{self.method}" requires argument "{name}" to be set'
            )

    def _finish_ldap(self) -> None:
        # OpenLDAP can find servers through DNS SRV records, so ldapserver is optional.
        v = self.values
        if "ldapprefix" in v or "ldapsuffix" in v:
            search = ("ldapbasedn", "ldapbinddn", "ldapbindpasswd", "ldapsearchattribute")
            if any(k in v for k in (*search, "ldapsearchfilter")):
                raise self.error("cannot mix options for simple bind and search+bind modes")
        elif "ldapbasedn" not in v:
            raise self.error(
                'authentication method "ldap" requires argument "ldapbasedn", "ldapprefix", '
                'or "ldapsuffix" to be set'
            )
        if "ldapsearchattribute" in v and "ldapsearchfilter" in v:
            raise self.error("cannot use ldapsearchattribute together with ldapsearchfilter")

    def _finish_radius(self) -> None:
        # An empty list is a NULL List in C, so it fails the "must be set" test first.
        for name in ("radiusservers", "radiussecrets"):
            if not self.lists.get(name):
                raise self.error(
                    f'authentication method "radius" requires argument "{name}" to be set'
                )
        servers = len(self.lists["radiusservers"])
        for name, noun, may_be_empty in (
            ("radiussecrets", "secrets", False),
            ("radiusports", "ports", True),
            ("radiusidentifiers", "identifiers", True),
        ):
            count = len(self.lists.get(name, []))
            if not (count == 1 or count == servers or (may_be_empty and count == 0)):
                raise self.error(
                    f"the number of RADIUS {noun} ({count}) must be 1 or the same as the "
                    f"number of RADIUS servers ({servers})"
                )

    def _finish_oauth(self, libraries: Sequence[str]) -> None:
        self._require("scope")
        self._require("issuer")
        validator = self.values.get("validator")
        if not libraries:
            raise self.error(
                "oauth_validator_libraries must be set for authentication method oauth"
            )
        if validator is None:
            if len(libraries) != 1:
                raise self.error(
                    'authentication method "oauth" requires argument "validator" to be set '
                    "when oauth_validator_libraries contains multiple options"
                )
        elif validator not in libraries:
            raise self.error(
                f'validator "{validator}" is not permitted by oauth_validator_libraries'
            )
        if self.values.get("delegate_ident_mapping") == "1" and "map" in self.values:
            raise self.error("map cannot be used in combination with delegate_ident_mapping")


def _check_clientcert(state: OptionState, value: str) -> None:
    if value == "verify-ca" and state.method is M.CERT:
        raise state.error('clientcert only accepts "verify-full" when using "cert" authentication')
    if value not in ("verify-ca", "verify-full"):
        raise state.error(f'invalid value for clientcert: "{value}"')


def _check_clientname(state: OptionState, value: str) -> None:
    if value not in ("CN", "DN"):
        raise state.error(f'invalid value for clientname: "{value}"')


def _check_ldapscheme(state: OptionState, value: str) -> None:
    # PostgreSQL only logs this one and keeps the line.
    if value not in ("ldap", "ldaps"):
        state.warn(str(state.error(f'invalid ldapscheme value: "{value}"')))


def _check_ldapport(state: OptionState, value: str) -> None:
    if c_atoi(value) == 0:
        raise state.error(f'invalid LDAP port number: "{value}"')


# OpenLDAP's ldap_url_parse; PostgreSQL prints its URL error code through ldap_err2string,
# which reads it as an LDAP result code (LDAP_URL_ERR_BADSCHEME 3 -> "Time limit exceeded").
_LDAP_URL = re.compile(
    r"<?(?:URL:)?(?P<scheme>ldap|ldaps|ldapi|cldap)://(?P<hostport>[^/?]*)"
    r"(?:/(?P<dn>[^?]*)(?:\?(?P<attrs>[^?]*)(?:\?(?P<scope>[^?]*)(?:\?(?P<filter>[^?]*)"
    r"(?:\?(?P<exts>.*))?)?)?)?)?>?",
    re.IGNORECASE,
)
_LDAP_SCOPES = ("", "base", "one", "onelevel", "sub", "subtree", "children", "subordinate")


def _check_ldapurl(state: OptionState, value: str) -> None:
    match = _LDAP_URL.fullmatch(value)
    if match is None:
        raise state.error(f'could not parse LDAP URL "{value}": Time limit exceeded')
    if (match["scope"] or "").lower() not in _LDAP_SCOPES:
        raise state.error(f'could not parse LDAP URL "{value}": Strong(er) authentication required')
    scheme = match["scheme"].lower()
    if scheme not in ("ldap", "ldaps"):
        raise state.error(f"unsupported LDAP URL scheme: {scheme}")
    host, port = _split_host_port(match["hostport"])
    state.values["ldapscheme"] = scheme
    for name, part in (
        ("ldapserver", host),
        ("ldapport", port),
        ("ldapbasedn", match["dn"]),
        ("ldapsearchattribute", (match["attrs"] or "").split(",")[0]),
        ("ldapsearchfilter", match["filter"]),
    ):
        if part:
            state.values[name] = part


def _split_host_port(hostport: str) -> tuple[str, str]:
    """``host[:port]``, with ``[v6]`` literals."""
    if hostport.startswith("[") and "]" in hostport:
        close = hostport.index("]")
        rest = hostport[close + 1 :]
        return hostport[1:close], rest[1:] if rest.startswith(":") else ""
    host, colon, port = hostport.rpartition(":")
    return (host, port) if colon else (hostport, "")


def _list_check(noun: str) -> Callable[[OptionState, str], None]:
    """RADIUS list options: each a GUC-style list; ports must be non-zero numbers."""

    def check(state: OptionState, value: str) -> None:
        items = split_identifier_string(value, downcase=False)  # SplitGUCList
        if items is None:
            raise state.error(f'could not parse RADIUS {noun} list "{value}"')
        if noun == "port" and any(c_atoi(item) == 0 for item in items):
            raise state.error(f'invalid RADIUS port number: "{value}"')
        state.lists[_RADIUS_LISTS[noun]] = items

    return check


_RADIUS_LISTS = {
    "server": "radiusservers",
    "port": "radiusports",
    "secret": "radiussecrets",
    "identifiers": "radiusidentifiers",
}


def c_atoi(text: str) -> int:
    """C ``atoi``: leading space, optional sign, digits up to the first non-digit, else 0."""
    match = re.match(r"[ \t\n\r\f\v]*([+-]?[0-9]+)", text)
    return int(match.group(1)) if match else 0


_VALUE_CHECKS: dict[str, Callable[[OptionState, str], None]] = {
    "clientcert": _check_clientcert,
    "clientname": _check_clientname,
    "ldapscheme": _check_ldapscheme,
    "ldapport": _check_ldapport,
    "ldapurl": _check_ldapurl,
    **{option: _list_check(noun) for noun, option in _RADIUS_LISTS.items()},
}

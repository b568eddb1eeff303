"""pg_hba.conf validation: accepted lines and PostgreSQL's error texts with file and line."""

from __future__ import annotations

from ipaddress import ip_address

import pytest
from test_hba_fakes import FakeFiles

from pggate.errors import ConfigError
from pggate.hba import (
    AddressKind,
    AuthFileError,
    AuthMethod,
    ConnType,
    HbaPolicy,
    HbaRule,
    load_hba,
)

HBA = "/etc/pg/pg_hba.conf"


def load(
    text: str, *, ssl: bool = True, extra: dict[str, str] | None = None, libs: tuple[str, ...] = ()
) -> tuple[HbaPolicy, list[str]]:
    warnings: list[str] = []
    policy = load_hba(
        HBA,
        FakeFiles({HBA: text, **(extra or {})}),
        ssl_enabled=ssl,
        warn=warnings.append,
        oauth_validator_libraries=libs,
    )
    return policy, warnings


def rule(text: str, **kwargs: object) -> HbaRule:
    policy, _ = load(text, **kwargs)  # type: ignore[arg-type]
    (only,) = policy.rules
    return only


def error(text: str, *, libs: tuple[str, ...] = ()) -> str:
    with pytest.raises(ConfigError) as info:
        load("# first line\n" + text, libs=libs)
    return str(info.value)


ERRORS = [
    ("foo all all trust", 'invalid connection type "foo"'),
    ("local,host all all trust", "multiple values specified for connection type"),
    ('"Local" all all trust', 'invalid connection type "Local"'),
    ("local", "end-of-line before database specification"),
    ("local all", "end-of-line before role specification"),
    ("host all all", "end-of-line before IP address specification"),
    ("host all all 1.2.3.4,5.6.7.8 trust", "multiple values specified for host address"),
    ("host all all 1.2.3.4/33 trust", 'invalid CIDR mask in address "1.2.3.4/33"'),
    ("host all all ::1/129 trust", 'invalid CIDR mask in address "::1/129"'),
    ("host all all 1.2.3.4/ trust", 'invalid CIDR mask in address "1.2.3.4/"'),
    ("host all all 1.2.3.4/8x trust", 'invalid CIDR mask in address "1.2.3.4/8x"'),
    (
        "host all all db.example.com/24 trust",
        'specifying both host name and CIDR mask is invalid: "db.example.com/24"',
    ),
    ("host all all 1.2.3.4", "end-of-line before netmask specification"),
    ("host all all 1.2.3.4 255.0.0.0", "end-of-line before authentication method"),
    ("host all all 1.2.3.4 bogus trust", 'invalid IP mask "bogus": Name or service not known'),
    ("host all all 1.2.3.4 ffff:: trust", "IP address and mask do not match"),
    ("host all all 1.2.3.4 255.0.0.0,255.0.0.0 trust", "multiple values specified for netmask"),
    ("local all all", "end-of-line before authentication method"),
    ("local all all trust,md5", "multiple values specified for authentication type"),
    ("local all all foo", 'invalid authentication method "foo"'),
    ("local all all Trust", 'invalid authentication method "Trust"'),
    ("host all all all sspi", 'invalid authentication method "sspi": not supported by this build'),
    ("local all all bsd", 'invalid authentication method "bsd": not supported by this build'),
    ("local all all gss", "gssapi authentication is not supported on local sockets"),
    ("host all all all peer", "peer authentication is only supported on local sockets"),
    ("host all all all cert", "cert authentication is only supported on hostssl connections"),
    ("hostnossl all all all cert", "cert authentication is only supported on hostssl connections"),
    ("host all all all md5 foo", "authentication option not in name=value format: foo"),
    ("host all all all md5 foo=bar", 'unrecognized authentication option name: "foo"'),
    ("host all all all md5 =x", 'unrecognized authentication option name: ""'),
    (
        "host all all all trust clientcert=verify-ca",
        'clientcert can only be configured for "hostssl" rows',
    ),
    ("hostssl all all all trust clientcert=1", 'invalid value for clientcert: "1"'),
    ("hostssl all all all trust clientcert=no-verify", 'invalid value for clientcert: "no-verify"'),
    (
        "hostssl all all all cert clientcert=verify-ca",
        'clientcert only accepts "verify-full" when using "cert" authentication',
    ),
    (
        "host all all all trust clientname=CN",
        'clientname can only be configured for "hostssl" rows',
    ),
    ("hostssl all all all trust clientname=cn", 'invalid value for clientname: "cn"'),
    (
        "host all all all md5 map=m",
        'authentication option "map" is only valid for authentication methods '
        "ident, peer, gssapi, sspi, cert, and oauth",
    ),
    (
        "host all all all md5 include_realm=0",
        'authentication option "include_realm" is only valid for authentication methods '
        "gssapi and sspi",
    ),
    (
        "host all all all ident krb_realm=R",
        'authentication option "krb_realm" is only valid for authentication methods '
        "gssapi and sspi",
    ),
    (
        "host all all all gss compat_realm=1",
        'authentication option "compat_realm" is only valid for authentication methods sspi',
    ),
    (
        "host all all all gss upn_username=1",
        'authentication option "upn_username" is only valid for authentication methods sspi',
    ),
    (
        "host all all all md5 ldapserver=x",
        'authentication option "ldapserver" is only valid for authentication methods ldap',
    ),
    (
        "host all all all md5 radiusservers=x",
        'authentication option "radiusservers" is only valid for authentication methods radius',
    ),
    (
        "host all all all ldap pamservice=x",
        'authentication option "pamservice" is only valid for authentication methods pam',
    ),
    (
        "host all all all md5 issuer=x",
        'authentication option "issuer" is only valid for authentication methods oauth',
    ),
    (
        "host all all all ldap",
        'authentication method "ldap" requires argument "ldapbasedn", "ldapprefix", or '
        '"ldapsuffix" to be set',
    ),
    (
        "host all all all ldap ldapprefix=a ldapbasedn=b",
        "cannot mix options for simple bind and search+bind modes",
    ),
    (
        "host all all all ldap ldapbasedn=b ldapsearchattribute=a ldapsearchfilter=f",
        "cannot use ldapsearchattribute together with ldapsearchfilter",
    ),
    ("host all all all ldap ldapbasedn=b ldapport=abc", 'invalid LDAP port number: "abc"'),
    (
        "host all all all ldap ldapurl=http://h/dc=x",
        'could not parse LDAP URL "http://h/dc=x": Time limit exceeded',
    ),
    ("host all all all ldap ldapurl=ldapi://h/dc=x", "unsupported LDAP URL scheme: ldapi"),
    (
        "host all all all radius",
        'authentication method "radius" requires argument "radiusservers" to be set',
    ),
    (
        "host all all all radius radiusservers=a",
        'authentication method "radius" requires argument "radiussecrets" to be set',
    ),
    (
        'host all all all radius radiusservers="" radiussecrets=s',
        'authentication method "radius" requires argument "radiusservers" to be set',
    ),
    (
        'host all all all radius radiusservers="a,b" radiussecrets="x,y,z"',
        "the number of RADIUS secrets (3) must be 1 or the same as the number of "
        "RADIUS servers (2)",
    ),
    (
        'host all all all radius radiusservers="a,b,c" radiussecrets=x radiusports="1,2"',
        "the number of RADIUS ports (2) must be 1 or the same as the number of RADIUS servers (3)",
    ),
    (
        "host all all all radius radiusservers=a radiussecrets=x radiusports=0",
        'invalid RADIUS port number: "0"',
    ),
    (
        'host all all all radius "radiusservers=a,,b" radiussecrets=x',
        'could not parse RADIUS server list "a,,b"',
    ),
    # An unquoted comma splits the option itself, as in PostgreSQL.
    (
        "host all all all radius radiusservers=a,b",
        "authentication option not in name=value format: b",
    ),
    ("host all all all oauth", 'authentication method "oauth" requires argument "scope" to be set'),
    (
        "host all all all oauth scope=openid",
        'authentication method "oauth" requires argument "issuer" to be set',
    ),
    (
        "host all all all oauth scope=openid issuer=https://i",
        "oauth_validator_libraries must be set for authentication method oauth",
    ),
]


@pytest.mark.parametrize(("line", "message"), ERRORS)
def test_line_errors(line: str, message: str) -> None:
    assert error(line) == f'{message}, line 2 of configuration file "{HBA}"'


@pytest.mark.parametrize(
    ("line", "libs", "message"),
    [
        (
            "host all all all oauth scope=s issuer=i",
            ("a", "b"),
            'authentication method "oauth" requires argument "validator" to be set when '
            "oauth_validator_libraries contains multiple options",
        ),
        (
            "host all all all oauth scope=s issuer=i validator=c",
            ("a", "b"),
            'validator "c" is not permitted by oauth_validator_libraries',
        ),
        (
            "host all all all oauth scope=s issuer=i map=m delegate_ident_mapping=1",
            ("a",),
            "map cannot be used in combination with delegate_ident_mapping",
        ),
    ],
)
def test_oauth_validator_errors(line: str, libs: tuple[str, ...], message: str) -> None:
    assert error(line, libs=libs) == f'{message}, line 2 of configuration file "{HBA}"'


def test_invalid_regex() -> None:
    assert error("local /a( all trust").startswith('invalid regular expression "a(": ')
    assert error('local all "/[" trust').startswith('invalid regular expression "[": ')


@pytest.mark.parametrize("text", ["", "# only comments\n\n   # here\n"])
def test_no_entries(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(text)
    assert str(info.value) == f'configuration file "{HBA}" contains no entries'


def test_every_bad_line_is_reported_in_order() -> None:
    with pytest.raises(AuthFileError) as info:
        load("local all all trust\nfoo\nlocal all all bar\ninclude nope.conf\n")
    assert [str(e) for e in info.value.errors] == [
        f'invalid connection type "foo", line 2 of configuration file "{HBA}"',
        f'invalid authentication method "bar", line 3 of configuration file "{HBA}"',
        'could not open file "/etc/pg/nope.conf": No such file or directory, '
        f'line 4 of configuration file "{HBA}"',
    ]
    assert (info.value.file, info.value.line) == (HBA, 2)


def test_error_in_included_file_names_that_file() -> None:
    with pytest.raises(ConfigError) as info:
        load("local all all trust\ninclude more.conf", extra={"/etc/pg/more.conf": "\nhost x"})
    assert str(info.value) == (
        'end-of-line before role specification, line 2 of configuration file "/etc/pg/more.conf"'
    )


def test_ident_on_local_becomes_peer() -> None:
    assert rule("local all all ident map=m").method is AuthMethod.PEER
    assert rule("host all all all ident").method is AuthMethod.IDENT


@pytest.mark.parametrize("method", [m.value for m in AuthMethod if m is not AuthMethod.OAUTH])
def test_every_method_name_is_accepted(method: str) -> None:
    conn = "local" if method == "peer" else "hostssl"
    addr = "" if conn == "local" else "all"
    opts = {
        "ldap": "ldapbasedn=dc=x",
        "radius": "radiusservers=r radiussecrets=s",
    }.get(method, "")
    assert rule(f"{conn} all all {addr} {method} {opts}").method == method


def test_oauth_with_single_validator() -> None:
    r = rule("host all all all oauth scope=openid issuer=https://i", libs=("v",))
    assert r.method is AuthMethod.OAUTH
    assert r.option("issuer") == "https://i"


def test_hostssl_while_ssl_disabled_warns_and_keeps_the_line() -> None:
    policy, warnings = load("hostssl all all all trust", ssl=False)
    assert len(policy.rules) == 1
    assert warnings == [
        f'hostssl record cannot match because SSL is disabled, line 1 of configuration file "{HBA}"'
    ]


def test_invalid_ldapscheme_only_warns() -> None:
    policy, warnings = load("host all all all ldap ldapbasedn=x ldapscheme=http")
    assert len(policy.rules) == 1
    assert warnings == [f'invalid ldapscheme value: "http", line 1 of configuration file "{HBA}"']


def test_ldapurl_fills_search_settings() -> None:
    r = rule("host all all all ldap ldapurl=ldaps://h:636/dc=x?uid?sub")
    assert r.option("ldapurl") == "ldaps://h:636/dc=x?uid?sub"
    # ldapurl provides ldapbasedn, so the line satisfies the search+bind requirement.
    with pytest.raises(ConfigError, match="cannot mix"):
        load("host all all all ldap ldapurl=ldap://h/dc=x ldapprefix=p")


@pytest.mark.parametrize(
    ("address", "network", "mask"),
    [
        ("10.1.2.3/8", "10.1.2.3", "255.0.0.0"),
        ("127.1/32", "127.0.0.1", "255.255.255.255"),  # glibc inet_aton spelling
        ("0x7f.0.0.1/32", "127.0.0.1", "255.255.255.255"),
        ("010.0.0.1/32", "8.0.0.1", "255.255.255.255"),  # octal
        ("0.0.0.0/0", "0.0.0.0", "0.0.0.0"),
        ("::1/128", "::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
        ("fe80::1%eth0/10", "fe80::1", "ffc0::"),
        ("::ffff:10.0.0.1/128", "::ffff:10.0.0.1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
        ("10.0.0.0 255.0.255.0", "10.0.0.0", "255.0.255.0"),  # non-contiguous mask is fine
        ("10.0.0.0/+8", "10.0.0.0", "255.0.0.0"),
    ],
)
def test_ip_addresses(address: str, network: str, mask: str) -> None:
    spec = rule(f"host all all {address} md5").address
    assert spec is not None and spec.kind is AddressKind.IP
    assert (spec.address, spec.mask) == (ip_address(network), ip_address(mask))


@pytest.mark.parametrize(
    ("token", "kind", "hostname"),
    [
        ("all", AddressKind.ALL, None),
        ("samehost", AddressKind.SAMEHOST, None),
        ("samenet", AddressKind.SAMENET, None),
        ('"all"', AddressKind.HOSTNAME, "all"),  # quoting removes keyword meaning
        ("db.example.com", AddressKind.HOSTNAME, "db.example.com"),
        (".example.com", AddressKind.HOSTNAME, ".example.com"),
        ("08.1.1.1", AddressKind.HOSTNAME, "08.1.1.1"),  # not valid octal: a name
        ("1.2.3.4.5", AddressKind.HOSTNAME, "1.2.3.4.5"),
    ],
)
def test_address_keywords_and_hostnames(
    token: str, kind: AddressKind, hostname: str | None
) -> None:
    spec = rule(f"host all all {token} md5").address
    assert spec is not None
    assert (spec.kind, spec.hostname) == (kind, hostname)


def test_typed_options() -> None:
    r = rule("hostssl all all all cert map=certmap clientname=DN")
    assert (r.usermap, r.clientcert, r.clientname) == ("certmap", "verify-full", "DN")
    r = rule("hostssl all all all scram-sha-256 clientcert=verify-ca")
    assert (r.clientcert, r.clientname, r.usermap) == ("verify-ca", "CN", None)
    r = rule("hostgssenc all all all gss krb_realm=EXAMPLE.COM map=g")
    assert (r.include_realm, r.krb_realm, r.usermap) == (True, "EXAMPLE.COM", "g")
    assert rule("host all all all gss include_realm=0").include_realm is False
    assert rule("host all all all md5").include_realm is False


def test_options_keep_order_and_last_wins() -> None:
    r = rule("hostssl all all all trust clientcert=verify-ca,clientcert=verify-full")
    assert r.options == (("clientcert", "verify-ca"), ("clientcert", "verify-full"))
    assert r.option("clientcert") == "verify-full"
    assert r.clientcert == "verify-full"
    assert r.option("map") is None


def test_rule_records_where_it_came_from() -> None:
    policy, _ = load("# c\nlocal   all \\\n  all   trust  # why\n")
    (r,) = policy.rules
    assert (r.conn_type, r.file, r.line_number) == (ConnType.LOCAL, HBA, 2)
    assert r.raw_line == "local   all   all   trust  # why"
    assert r.log_detail == (
        f'Connection matched file "{HBA}" line 2: "local   all   all   trust  # why"'
    )


@pytest.mark.parametrize(
    ("text", "roles", "hostname", "ifaces"),
    [
        ("local all all trust", False, False, False),
        ("local samerole all trust", True, False, False),
        ("local samegroup all trust", True, False, False),
        ('local "samerole" all trust', False, False, False),
        ("local all +admins trust", True, False, False),
        ('local all "+admins" trust', False, False, False),
        ("host all all .example.com md5", False, True, False),
        ("host all all samenet md5", False, False, True),
        ("host all all samehost md5\nlocal all +a trust", True, False, True),
    ],
)
def test_needs_lookups(text: str, roles: bool, hostname: bool, ifaces: bool) -> None:
    policy, _ = load(text)
    assert (policy.needs_roles, policy.needs_hostname, policy.needs_local_interfaces) == (
        roles,
        hostname,
        ifaces,
    )

"""backend_target: the whole conninfo as libpq 18's pqConnectOptions2 sees it."""

from __future__ import annotations

import dataclasses

import pytest

from pggate.conninfo import (
    AUTH_METHODS,
    NOT_SUPPORTED,
    BackendAddress,
    BackendTarget,
    HostSpec,
    RequireAuth,
    backend_address,
    backend_target,
    parse_pgpass,
)
from pggate.conninfo.validate import require_auth
from pggate.errors import ConfigError


def refused(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        backend_target(text)
    assert info.value.parameter == "backend"
    return info.value


def test_libpq_defaults() -> None:
    target = backend_target("")
    assert target.hosts == (HostSpec(host="/var/run/postgresql"),)
    assert (target.sslmode, target.target_session_attrs, target.load_balance_hosts) == (
        "prefer",
        "any",
        "disable",
    )
    settings = target.settings
    assert (settings.channel_binding, settings.gssencmode, settings.krbsrvname) == (
        "prefer",
        "prefer",
        "postgres",
    )
    assert settings.tls.sslnegotiation == "postgres" and settings.tls.sslsni
    assert settings.tls.min_protocol_version == "TLSv1.2"
    assert settings.tls.max_protocol_version is None
    assert settings.require_auth == RequireAuth(frozenset(AUTH_METHODS), allow_none=True)
    assert settings.tcp.keepalives and settings.tcp.keepalives_idle is None
    assert (target.connect_timeout, target.application_name) == (10.0, "pggate")
    assert target.user is target.dbname is target.password is target.passfile is None


@pytest.mark.parametrize(
    ("text", "hosts"),
    [
        ("host=a,b port=1", [("a", None, 1), ("b", None, 1)]),
        ("host=a,b port=1,2", [("a", None, 1), ("b", None, 2)]),
        (
            "host=a,,/s port=,7,",
            [("a", None, 5432), ("/var/run/postgresql", None, 7), ("/s", None, 5432)],
        ),
        ("hostaddr=10.0.0.1,::1 host=db,", [("db", "10.0.0.1", 5432), (None, "::1", 5432)]),
        ("hostaddr=10.0.0.1, host=db,other", [("db", "10.0.0.1", 5432), ("other", None, 5432)]),
        (
            "postgresql://a:1,[::1]:2,/x",
            [("a", None, 1), ("::1", None, 2), ("/var/run/postgresql", None, 5432)],
        ),
    ],
)
def test_host_lists(text: str, hosts: list[tuple[str | None, str | None, int]]) -> None:
    target = backend_target(text)
    assert [(h.host, h.hostaddr, h.port) for h in target.hosts] == hosts
    assert len(target.addresses()) == len(hosts)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("host=a,b port=1,2,3", "could not match 3 port numbers to 2 hosts"),
        ("port=1,2", "could not match 2 port numbers to 1 hosts"),
        ("hostaddr=10.0.0.1,10.0.0.2 host=a", "could not match 1 host names to 2 hostaddr values"),
        ("hostaddr=10.0.0.1 host=a,b", "could not match 2 host names to 1 hostaddr values"),
        ("host=a,b port=1,x", 'invalid integer value "x" for connection option "port"'),
        ("port=0", 'invalid port number: "0"'),
        ("hostaddr=db.example.com", 'could not parse network address "db.example.com"'),
        ("host=/" + "d" * 100, 'Unix-domain socket path "/ddd'),
        ("postgresql://u:p@ss@h", 'host name contains "@"'),
    ],
)
def test_host_list_refusals(text: str, message: str) -> None:
    assert refused(text).message.startswith(message)


def test_one_address_per_host_in_order() -> None:
    target = backend_target(
        "host=/run/pg,db1,db2 hostaddr=,,10.0.0.2 port=6000,6001,6002 user=gate dbname=app "
        "password=pw sslmode=verify-full application_name=gw connect_timeout=3"
    )
    unix, named, numeric = target.addresses()
    assert unix.is_unix_socket and unix.socket_path == "/run/pg/.s.PGSQL.6000"
    assert unix.sslmode == "disable"  # libpq uses no TLS on a Unix socket
    assert (named.host, named.port, named.sslmode, named.server_name) == (
        "db1",
        6001,
        "verify-full",
        "db1",
    )
    assert (numeric.host, numeric.hostaddr, numeric.server_name) == ("10.0.0.2", "10.0.0.2", "db2")
    assert numeric.describe() == 'host "db2" (10.0.0.2) port 6002'
    for address in (unix, named, numeric):
        assert (address.user, address.dbname, address.password) == ("gate", "app", "pw")
        assert (address.connect_timeout, address.application_name) == (3.0, "gw")
        assert address.settings is target.settings
        assert "pw" not in repr(address) and "pw" not in address.describe()


def test_abstract_socket() -> None:
    (address,) = backend_target("host=@pg port=5").addresses()
    assert address.is_unix_socket and address.socket_path == "\0pg/.s.PGSQL.5"
    assert address.describe() == 'Unix socket "@pg/.s.PGSQL.5"'


def test_old_style_address_still_constructs() -> None:
    address = BackendAddress(host="/run/pg", port=5432, user="pggate")
    assert address.server_name == "/run/pg" and address.gssencmode == "disable"
    assert address.settings.tls.sslnegotiation == "postgres"


@pytest.mark.parametrize(
    ("text", "sslmode"),
    [
        ("host=db", "prefer"),
        ("host=db sslrootcert=system", "verify-full"),  # conninfo_add_defaults
        ("host=db sslmode=require sslrootcert=/ca.crt", "require"),
    ],
)
def test_sslmode(text: str, sslmode: str) -> None:
    assert backend_target(text).sslmode == sslmode


def test_tls_settings() -> None:
    tls = backend_target(
        "host=db sslmode=verify-ca sslnegotiation=direct sslrootcert=/ca sslcert=/c "
        "sslkey=/k sslpassword=kp sslcrl=/crl sslcrldir=/crls sslsni=0 "
        "ssl_min_protocol_version=tlsv1.3 ssl_max_protocol_version=TLSV1.3"
    ).settings.tls
    assert (tls.sslnegotiation, tls.sslrootcert, tls.sslcert, tls.sslkey) == (
        "direct",
        "/ca",
        "/c",
        "/k",
    )
    assert (tls.sslpassword, tls.sslcrl, tls.sslcrldir, tls.sslsni) == (
        "kp",
        "/crl",
        "/crls",
        False,
    )
    assert (tls.min_protocol_version, tls.max_protocol_version) == ("TLSv1.3", "TLSv1.3")
    assert "kp" not in repr(tls) and not tls.system_roots
    empty = backend_target("host=db sslrootcert='' sslcert='' ssl_min_protocol_version=''")
    assert empty.settings.tls.sslrootcert is None and empty.settings.tls.sslcert is None
    assert empty.settings.tls.min_protocol_version is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sslmode=verify", 'invalid sslmode value: "verify"'),
        (
            "sslnegotiation=direct",
            'weak sslmode "prefer" may not be used with sslnegotiation=direct',
        ),
        ("sslrootcert=system sslmode=verify-ca", 'weak sslmode "verify-ca" may not be used with'),
        ("ssl_max_protocol_version=TLSv1.1", "invalid SSL protocol version range"),
        ("ssl_min_protocol_version=SSLv3", 'invalid "ssl_min_protocol_version" value: "SSLv3"'),
        ("channel_binding=yes", 'invalid channel_binding value: "yes"'),
        ("gssencmode=allow", 'invalid gssencmode value: "allow"'),
        ("target_session_attrs=primary,standby", 'invalid target_session_attrs value: "primary'),
        ("load_balance_hosts=on", 'invalid load_balance_hosts value: "on"'),
        ("sslsni=yes", 'invalid sslsni value: "yes"'),  # libpq would read it as "off"
        ("connect_timeout=1.5", 'invalid integer value "1.5" for connection option'),
        ("keepalives=on", 'invalid integer value "on" for connection option "keepalives"'),
        ("keepalives_idle=99999999999", 'invalid integer value "99999999999"'),
        ("tcp_user_timeout=", 'invalid integer value "" for connection option "tcp_user_timeout"'),
    ],
)
def test_setting_refusals(text: str, message: str) -> None:
    assert refused(text).message.startswith(message)


@pytest.mark.parametrize(
    ("text", "methods", "allow_none"),
    [
        ("password,md5", {"password", "md5"}, False),
        ("scram-sha-256,none", {"scram-sha-256"}, True),
        ("!password,!md5", set(AUTH_METHODS) - {"password", "md5"}, True),
        ("!none", set(AUTH_METHODS), False),
        ("gss,sspi,oauth", {"gss", "sspi", "oauth"}, False),
    ],
)
def test_require_auth(text: str, methods: set[str], allow_none: bool) -> None:
    parsed = require_auth(text)
    assert (parsed.methods, parsed.allow_none) == (frozenset(methods), allow_none)
    assert parsed.allows("none") is allow_none


def test_tcp_settings_as_libpq_applies_them() -> None:
    tcp = backend_target(
        "keepalives=0 keepalives_idle=-5 keepalives_interval=' +7 ' keepalives_count=3 "
        "tcp_user_timeout=1000"
    ).settings.tcp
    assert not tcp.keepalives
    assert (tcp.keepalives_idle, tcp.keepalives_interval, tcp.keepalives_count) == (0, 7, 3)
    assert tcp.user_timeout == 1000
    assert backend_target("keepalives=2").settings.tcp.keepalives


def test_session_settings() -> None:
    target = backend_target(
        "host=a,b target_session_attrs=prefer-standby load_balance_hosts=random "
        "options='-c search_path=x' gssencmode=disable krbsrvname=pg passfile=/p"
    )
    assert (target.target_session_attrs, target.load_balance_hosts) == ("prefer-standby", "random")
    assert target.settings.options == "-c search_path=x"
    assert (target.settings.gssencmode, target.settings.krbsrvname) == ("disable", "pg")
    assert target.passfile == "/p"


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("", "pggate"),
        ("application_name=''", "pggate"),
        ("fallback_application_name=fb", "fb"),
        ("application_name=app fallback_application_name=fb", "app"),
    ],
)
def test_application_name(text: str, name: str) -> None:
    assert backend_target(text).application_name == name


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("host=/s gssencmode=require", "GSSAPI encryption required but it is not supported over"),
        ("host=/s channel_binding=require", "channel binding required, but SSL not in use"),
        ("host=db sslmode=disable channel_binding=require", "channel binding required, but SSL"),
        ("host=db channel_binding=require require_auth=password", "channel binding required, but"),
        ("hostaddr=10.0.0.1 sslmode=verify-full", "host name must be specified for a verified SSL"),
    ],
)
def test_combinations_that_fail_every_connection_are_refused_early(text: str, message: str) -> None:
    assert refused(text).message.startswith(message)


def test_channel_binding_with_scram_and_tls() -> None:
    target = backend_target("host=db channel_binding=require require_auth=scram-sha-256")
    assert target.settings.channel_binding == "require"


@pytest.mark.parametrize("keyword", sorted(NOT_SUPPORTED))
def test_keywords_pggate_does_not_act_on_are_refused(keyword: str) -> None:
    err = refused(f"host=/s {keyword}=x")
    assert err.message == f'connection option "{keyword}" is not supported by pggate'
    assert err.detail


def test_defaults_are_under_the_conninfo() -> None:
    target = backend_target("host=/s", {"user": "gate", "host": "/other"})
    assert (target.user, target.hosts[0].host) == ("gate", "/s")
    with pytest.raises(ConfigError, match='invalid connection option "nope"'):
        backend_target("", {"nope": "1"})


def test_model_is_frozen_and_slotted() -> None:
    target = backend_target("host=/s password=secret")
    for obj in (target, target.hosts[0], target.settings, target.addresses()[0]):
        assert not hasattr(obj, "__dict__")
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, dataclasses.fields(obj)[0].name, None)
    assert "secret" not in repr(target)


def test_passwords_from_a_passfile_per_host() -> None:
    entries = parse_pgpass("localhost:5432:*:gate:one\ndb2:*:app:gate:two\n*:*:*:*:other\n")
    target = backend_target("host=,db2,db3 dbname=app user=gate").with_pgpass(entries, "postgres")
    assert [a.password for a in target.addresses()] == ["one", "two", "other"]
    # the conninfo's own password wins, as in libpq
    written = backend_target("host=db2 password=mine user=gate")
    assert written.with_pgpass(entries, "postgres") is written
    # without user and dbname, the default role is both
    defaulted = backend_target("host=db2").with_pgpass(parse_pgpass("db2:*:pg:pg:x"), "pg")
    assert defaulted.addresses()[0].password == "x"
    assert isinstance(defaulted, BackendTarget)


# --- backend_address: today's I/O layer --------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("host=/s keepalives=1", 'connection option "keepalives" is not supported yet'),
        ("host=/s options=-cx=y", 'connection option "options" is not supported yet'),
        ("host=/s service=x", 'connection option "service" is not supported by pggate'),
        ("postgresql://a,b/db?sslmode=disable", 'several hosts or ports in "host"'),
        ("host=db sslrootcert=system", 'sslmode "verify-full" is not supported yet'),
    ],
)
def test_backend_address_refuses_what_the_io_layer_cannot_do_yet(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        backend_address(text)
    assert info.value.message.startswith(message)


def test_backend_address_is_the_first_address_of_the_target() -> None:
    text = "hostaddr=10.0.0.5 host=db port=6000 sslmode=disable user=u"
    assert backend_address(text) == backend_target(text).addresses()[0]

"""pg_GSS_checkauth as a table: realm stripping, krb_realm, maps, krb_caseins_users.

Pure: no KDC, the principal is what ``gss_display_name`` would have returned.
"""

from __future__ import annotations

import pytest
from test_hba_fakes import FakeFiles

from pggate.auth.gss import authorize_gss_principal, check_gss_principal
from pggate.hba import IdentMaps, load_ident
from pggate.proto.errors import ClientError

IDENT = "/etc/pg/pg_ident.conf"
# PostgreSQL's src/test/kerberos map, unescaped dot and all; plus a plain-name line.
MAPS = load_ident(
    IDENT,
    FakeFiles(
        {
            IDENT: (
                "mymap  /^(.*)@EXAMPLE.COM$  \\1\n"
                "plain  TEST1@EXAMPLE.COM    test1\n"
                "short  test1                reports\n"
            )
        }
    ),
    warn=lambda _: None,
)
T1 = "test1@EXAMPLE.COM"
NO_MATCH_T1 = 'no match in usermap "{map}" for user "{user}" authenticated as "{system}"'


def mismatch(pg_user: str, system: str) -> str:
    return f"provided user name ({pg_user}) and authenticated user name ({system}) do not match"


def realm_mismatch(realm: str, configured: str) -> str:
    return f"GSSAPI realm ({realm}) and configured realm ({configured}) don't match"


NO_REALM = "GSSAPI did not return realm but realm matching was requested"


@pytest.mark.parametrize(
    ("principal", "pg_user", "include_realm", "krb_realm", "usermap", "caseins", "expected"),
    [
        # include_realm=1 (the default): the whole principal is compared / mapped.
        (T1, T1, True, None, None, False, None),
        (T1, "test1", True, None, None, False, mismatch("test1", T1)),
        # include_realm=0: the realm is cut off before the comparison.
        (T1, "test1", False, None, None, False, None),
        (T1, T1, False, None, None, False, mismatch(T1, "test1")),
        # krb_realm must equal the principal's realm, whatever include_realm says.
        (T1, "test1", False, "EXAMPLE.COM", None, False, None),
        (T1, T1, True, "EXAMPLE.COM", None, False, None),
        (
            T1,
            "test1",
            False,
            "EXAMPLE.ORG",
            None,
            False,
            realm_mismatch("EXAMPLE.COM", "EXAMPLE.ORG"),
        ),
        (T1, T1, True, "EXAMPLE.ORG", None, False, realm_mismatch("EXAMPLE.COM", "EXAMPLE.ORG")),
        # ... case-insensitively only with krb_caseins_users.
        (
            T1,
            "test1",
            False,
            "example.com",
            None,
            False,
            realm_mismatch("EXAMPLE.COM", "example.com"),
        ),
        (T1, "test1", False, "example.com", None, True, None),
        # An empty krb_realm is no krb_realm (strlen check).
        (T1, "test1", False, "", None, False, None),
        # No realm in the principal: fine without krb_realm, a failure with it.
        ("test1", "test1", True, None, None, False, None),
        ("test1", "test1", False, "EXAMPLE.COM", None, False, NO_REALM),
        # The first '@' splits.
        ("a@b@EXAMPLE.COM", "a", False, None, None, False, None),
        (
            "a@b@EXAMPLE.COM",
            "a",
            False,
            "EXAMPLE.COM",
            None,
            False,
            realm_mismatch("b@EXAMPLE.COM", "EXAMPLE.COM"),
        ),
        # Maps: the Kerberos test's regex with \1.
        (T1, "test1", True, None, "mymap", False, None),
        (
            T1,
            "test2",
            True,
            None,
            "mymap",
            False,
            NO_MATCH_T1.format(map="mymap", user="test2", system=T1),
        ),
        (
            "test1@EXAMPLE.ORG",
            "test1",
            True,
            None,
            "mymap",
            False,
            NO_MATCH_T1.format(map="mymap", user="test1", system="test1@EXAMPLE.ORG"),
        ),
        # include_realm=0 feeds the stripped name to the map: the regex no longer matches.
        (
            T1,
            "test1",
            False,
            None,
            "mymap",
            False,
            NO_MATCH_T1.format(map="mymap", user="test1", system="test1"),
        ),
        (T1, "reports", False, None, "short", False, None),
        # A map name with no lines (the Kerberos test's first, empty map).
        (
            T1,
            "test1",
            True,
            None,
            "emptymap",
            False,
            NO_MATCH_T1.format(map="emptymap", user="test1", system=T1),
        ),
        # krb_caseins_users also governs the name comparison and the map.
        ("Test1@EXAMPLE.COM", "test1", False, None, None, False, mismatch("test1", "Test1")),
        ("Test1@EXAMPLE.COM", "test1", False, None, None, True, None),
        (
            T1,
            "test1",
            True,
            None,
            "plain",
            False,
            NO_MATCH_T1.format(map="plain", user="test1", system=T1),
        ),
        (T1, "test1", True, None, "plain", True, None),
        (T1, "TEST1", True, None, "plain", True, None),
    ],
)
def test_checkauth(
    principal: str,
    pg_user: str,
    include_realm: bool,
    krb_realm: str | None,
    usermap: str | None,
    caseins: bool,
    expected: str | None,
) -> None:
    result = check_gss_principal(
        principal,
        pg_user=pg_user,
        include_realm=include_realm,
        krb_realm=krb_realm,
        usermap=usermap,
        case_insensitive=caseins,
        ident=MAPS,
    )
    assert result == expected


def test_empty_ident_file() -> None:
    assert check_gss_principal(
        T1,
        pg_user="test1",
        include_realm=True,
        krb_realm=None,
        usermap="mymap",
        case_insensitive=False,
        ident=IdentMaps(),
    ) == NO_MATCH_T1.format(map="mymap", user="test1", system=T1)


def test_authorize_raises_the_method_failure() -> None:
    with pytest.raises(ClientError) as info:
        authorize_gss_principal(
            T1,
            pg_user="test1",
            include_realm=False,
            krb_realm="EXAMPLE.ORG",
            usermap=None,
            case_insensitive=False,
            ident=MAPS,
        )
    err = info.value
    assert err.sqlstate == "28000"
    assert err.message == 'GSSAPI authentication failed for user "test1"'
    assert err.log_detail == realm_mismatch("EXAMPLE.COM", "EXAMPLE.ORG")
    authorize_gss_principal(
        T1,
        pg_user="test1",
        include_realm=True,
        krb_realm="EXAMPLE.COM",
        usermap="mymap",
        case_insensitive=False,
        ident=MAPS,
    )

"""Password authentication (auth/password.py, auth/verifiers.py) as playbooks, no sockets.

Each exchange is driven by a real client: scramp's ScramClient (with and without
``tls-server-end-point`` channel binding), a small RFC 5802 client for what scramp will not send
(libpq's empty ``n=``, iteration counts below 4096, hand-made mistakes), and MD5 computed here
independently. Secrets are made the way PostgreSQL stores them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import scramp
from hypothesis import given, settings
from hypothesis import strategies as st

from pggate.auth import verifiers
from pggate.auth.password import (
    CleartextExchange,
    Exchange,
    Failure,
    Input,
    Md5Exchange,
    Outcome,
    ScramExchange,
    Send,
    State,
    Success,
    choose_exchange,
)
from pggate.auth.verifiers import RoleSecret
from pggate.errors import SilentClose
from pggate.hba.methods import AuthMethod
from pggate.proto import codec, codes, password_math, query
from pggate.proto.errors import ClientError
from pggate.statetable import IllegalMove

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
MOCK_NONCE = bytes(range(32))
CERT_HASH = hashlib.sha256(b"our server certificate, DER").digest()
PASSWORD = "pencil"
PASSWORD_FAILED = 'password authentication failed for user "{}"'


# --- secrets, made independently of the code under test ----------------------------------------


def scram_secret(password: str, *, iterations: int = 4096, salt: bytes | None = None) -> str:
    """A pg_authid SCRAM verifier, keys derived by scramp (which applies SASLprep)."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    mech = scramp.ScramMechanism("SCRAM-SHA-256")
    _, stored, server, _ = mech.make_auth_info(password, iteration_count=iterations, salt=salt)
    return _format_scram(iterations, salt, stored, server)


def rfc_scram_secret(raw_password: bytes, *, iterations: int, salt: bytes) -> str:
    """The RFC 5802 recipe on raw bytes (no SASLprep), for what scramp refuses to build."""
    salted = hashlib.pbkdf2_hmac("sha256", raw_password, salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    return _format_scram(iterations, salt, hashlib.sha256(client_key).digest(), server_key)


def _format_scram(iterations: int, salt: bytes, stored: bytes, server: bytes) -> str:
    b64 = base64.b64encode
    return (
        f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}"
        f"${b64(stored).decode()}:{b64(server).decode()}"
    )


def md5_stored(password: str, user: str) -> str:
    return "md5" + hashlib.md5((password + user).encode()).hexdigest()


def role(
    name: str = "alice",
    password: str | None = None,
    *,
    until: datetime | None = None,
    secret: str | None = None,
) -> RoleSecret:
    stored = secret if secret is not None else (scram_secret(password) if password else None)
    return RoleSecret(name, stored, until, True)


# --- wire helpers ------------------------------------------------------------------------------


def auth_request(message: bytes) -> tuple[int, bytes]:
    """An AuthenticationXXX message → (code, payload), checking its framing."""
    parsed, consumed = codec.read_message(message, max_length=1 << 16)
    assert parsed is not None and consumed == len(message)
    kind, body = parsed
    assert kind == codes.MSG_AUTHENTICATION
    return codec.parse_authentication(body)


def sasl_initial(mechanism: str | bytes, data: bytes | None) -> bytes:
    name = mechanism.encode() if isinstance(mechanism, str) else mechanism
    if data is None:
        return name + b"\0" + (-1).to_bytes(4, "big", signed=True)
    return name + b"\0" + len(data).to_bytes(4, "big") + data


def password_body(password: str | bytes) -> bytes:
    raw = password.encode() if isinstance(password, str) else password
    return raw + b"\0"


def failed(outcome: Outcome) -> ClientError:
    assert isinstance(outcome, Failure), outcome
    return outcome.error


def sent(outcome: Outcome) -> bytes:
    assert isinstance(outcome, Send), outcome
    return outcome.data


def assert_password_failure(outcome: Outcome, user: str = "alice") -> ClientError:
    err = failed(outcome)
    assert (err.sqlstate, err.message, err.severity) == (
        codes.SQLSTATE_INVALID_PASSWORD,
        PASSWORD_FAILED.format(user),
        codes.SEVERITY_FATAL,
    )
    assert err.detail is None and err.hint is None
    return err


def scram(
    secret: RoleSecret | None, *, tls: bool = False, user: str = "alice", now: datetime = NOW
) -> ScramExchange:
    return ScramExchange(
        user,
        secret,
        now=now,
        tls_end_point_hash=CERT_HASH if tls else None,
        mock_nonce=MOCK_NONCE,
    )


# --- a hand-written RFC 5802 client --------------------------------------------------------------


@dataclass
class RfcClient:
    """SCRAM-SHA-256 client per RFC 5802, able to send what libpq sends (``n,,n=,r=...``)."""

    password: bytes = PASSWORD.encode()
    gs2: bytes = b"n,,"
    nonce: bytes = b"rOprNGfwEbeRWgbNEkqO"
    user: bytes = b""
    first_extra: bytes = b""
    bare: bytes = b""

    def first(self) -> bytes:
        self.bare = b"n=" + self.user + b",r=" + self.nonce + self.first_extra
        return self.gs2 + self.bare

    def final(
        self,
        server_first: bytes,
        *,
        cbind: bytes | None = None,
        nonce: bytes | None = None,
        extra: bytes = b"",
    ) -> bytes:
        attrs = dict(item.split(b"=", 1) for item in server_first.split(b","))
        salted = hashlib.pbkdf2_hmac(
            "sha256", self.password, base64.b64decode(attrs[b"s"]), int(attrs[b"i"])
        )
        client_key = hmac.new(salted, b"Client Key", "sha256").digest()
        c = base64.b64encode(self.gs2 if cbind is None else cbind)
        without_proof = b"c=" + c + b",r=" + (attrs[b"r"] if nonce is None else nonce) + extra
        auth_message = self.bare + b"," + server_first + b"," + without_proof
        signature = hmac.new(hashlib.sha256(client_key).digest(), auth_message, "sha256").digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        return without_proof + b",p=" + base64.b64encode(proof)


def open_scram(ex: ScramExchange, mechanism: str, client_first: bytes) -> bytes:
    """start() + SASLInitialResponse; the server-first-message."""
    ex.start()
    code, payload = auth_request(sent(ex.receive(b"p", sasl_initial(mechanism, client_first))))
    assert code == codes.AUTH_SASL_CONTINUE
    return payload


def run_scramp(
    ex: ScramExchange,
    password: str,
    *,
    plus: bool = False,
    cb_data: bytes = CERT_HASH,
) -> tuple[Outcome, bytes | None]:
    """A full exchange driven by scramp's client; (last outcome, server-first payload)."""
    code, payload = auth_request(ex.start())
    assert code == codes.AUTH_SASL
    offered = payload.split(b"\0")[:-2]
    mechanism = "SCRAM-SHA-256-PLUS" if plus else "SCRAM-SHA-256"
    assert mechanism.encode() in offered
    client = scramp.ScramClient(
        [mechanism],
        "alice",
        password,
        channel_binding=("tls-server-end-point", cb_data) if plus else None,
    )
    first = client.get_client_first().encode()
    outcome = ex.receive(b"p", sasl_initial(mechanism, first))
    if not isinstance(outcome, Send):
        return outcome, None
    code, server_first = auth_request(outcome.data)
    assert code == codes.AUTH_SASL_CONTINUE
    client.set_server_first(server_first.decode())
    outcome = ex.receive(b"p", client.get_client_final().encode())
    if isinstance(outcome, Success):
        code, final = auth_request(outcome.final)
        assert code == codes.AUTH_SASL_FINAL
        client.set_server_final(final.decode())  # raises unless ServerSignature is right
    return outcome, server_first


SERVER_FIRST = re.compile(
    rb"r=(?P<cnonce>[!-+\--~]+?)(?P<snonce>[A-Za-z0-9+/]{24}),"
    rb"s=(?P<salt>[A-Za-z0-9+/]{22}==),i=(?P<i>[0-9]+)"
)


# --- verifiers: the catalog query and its result -----------------------------------------------


def test_role_secret_sql_is_fixed_text_with_one_literal() -> None:
    hostile = "x' OR true; DROP TABLE t; --\\"
    sql = verifiers.role_secret_sql(hostile)
    prefix = (
        "SELECT a.rolname, a.rolpassword, EXTRACT(EPOCH FROM a.rolvaliduntil), a.rolcanlogin"
        " FROM pg_catalog.pg_authid a WHERE a.rolname = "
    )
    assert sql == prefix + query.quote_literal(hostile)
    assert sql.endswith("E'x'' OR true; DROP TABLE t; --\\\\'")
    assert verifiers.role_secret_sql("bob") == prefix + "E'bob'"


def test_role_secret_sql_refuses_nul() -> None:
    with pytest.raises(ValueError):
        verifiers.role_secret_sql("a\0b")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, None),
        ("0", datetime(1970, 1, 1, tzinfo=UTC)),
        ("1748779200.000000", datetime(2025, 6, 1, 12, 0, tzinfo=UTC)),
        ("1748779200.25", datetime(2025, 6, 1, 12, 0, 0, 250000, tzinfo=UTC)),
        ("-86400", datetime(1969, 12, 31, tzinfo=UTC)),
        ("1.7487792E+9", datetime(2025, 6, 1, 12, 0, tzinfo=UTC)),  # float8 text (PG < 14)
        ("Infinity", verifiers.VALID_FOREVER),
        ("-Infinity", verifiers.EXPIRED_ALWAYS),
        ("9000000000000", verifiers.VALID_FOREVER),  # past year 9999: clamped
    ],
)
def test_parse_role_secret_validity(text: str | None, expected: datetime | None) -> None:
    secret = verifiers.parse_role_secret([["alice", "md5" + "0" * 32, text, "t"]])
    assert secret == RoleSecret("alice", "md5" + "0" * 32, expected, True)


def test_parse_role_secret_shapes() -> None:
    assert verifiers.parse_role_secret([]) is None
    assert verifiers.parse_role_secret([["bob", None, None, "f"]]) == RoleSecret(
        "bob", None, None, False
    )
    for rows in (
        [["a", None, None, "t"], ["b", None, None, "t"]],
        [["a", None, None]],
        [["a", None, None, "yes"]],
        [[None, None, None, "t"]],
        [["a", None, "soon", "t"]],
        [["a", None, "NaN", "t"]],
    ):
        with pytest.raises(ClientError):
            verifiers.parse_role_secret(rows)


def test_secret_problem_texts() -> None:
    assert verifiers.secret_problem(None, "ghost", NOW) == 'Role "ghost" does not exist.'
    assert (
        verifiers.secret_problem(RoleSecret("bob", None, None, True), "bob", NOW)
        == 'User "bob" has no password assigned.'
    )
    expired = RoleSecret("bob", "x", NOW - timedelta(microseconds=1), True)
    assert verifiers.secret_problem(expired, "bob", NOW) == 'User "bob" has an expired password.'
    # rolvaliduntil < now expires; exactly now is still valid (crypt.c).
    assert verifiers.secret_problem(RoleSecret("bob", "x", NOW, True), "bob", NOW) is None
    assert verifiers.secret_problem(RoleSecret("bob", "x", None, False), "bob", NOW) is None
    with pytest.raises(ValueError):
        verifiers.secret_problem(None, "bob", NOW.replace(tzinfo=None))


# --- verifiers: stored formats -----------------------------------------------------------------


def test_parse_scram_secret() -> None:
    salt = bytes(range(16))
    text = scram_secret(PASSWORD, salt=salt, iterations=5000)
    parsed = verifiers.parse_scram_secret(text)
    assert parsed is not None
    assert (parsed.iterations, parsed.salt, parsed.salt_b64) == (
        5000,
        salt,
        base64.b64encode(salt).decode(),
    )
    assert verifiers.password_type(text) is verifiers.PasswordType.SCRAM_SHA_256


@pytest.mark.parametrize(
    "mangle",
    [
        lambda s: s.replace("SCRAM-SHA-256", "SCRAM-SHA-1"),
        lambda s: s.replace("$4096:", "$40x6:"),
        lambda s: s.replace("$4096:", "$0:"),
        lambda s: s.replace("$4096:", "$:"),
        lambda s: s.replace("$4096:", "$-1:"),
        lambda s: s[:-2],  # ServerKey cut: bad base64
        lambda s: s.rsplit(":", 1)[0] + ":" + base64.b64encode(b"short").decode(),
        lambda s: s.rsplit(":", 1)[0],
        lambda s: s.split("$")[0] + "$" + s.split("$")[1],
        lambda s: s.replace(":", ": ", 1),  # whitespace in the salt
        lambda s: "",
    ],
)
def test_parse_scram_secret_refuses(mangle: Callable[[str], str]) -> None:
    text = mangle(scram_secret(PASSWORD))
    assert verifiers.parse_scram_secret(text) is None
    assert verifiers.password_type(text) is verifiers.PasswordType.PLAINTEXT


def test_md5_secret_format() -> None:
    good = md5_stored(PASSWORD, "alice")
    assert verifiers.is_md5_secret(good)
    assert verifiers.password_type(good) is verifiers.PasswordType.MD5
    assert not verifiers.is_md5_secret(good.upper().replace("MD5", "md5"))
    assert not verifiers.is_md5_secret(good[:-1])
    assert not verifiers.is_md5_secret(good + "0")
    assert verifiers.md5_secret(PASSWORD.encode(), "alice") == good.encode()


def test_mock_secret_is_deterministic_per_user_and_nonce() -> None:
    mock = verifiers.mock_scram_secret("ghost", MOCK_NONCE)
    expected_salt = hashlib.sha256(b"ghost" + MOCK_NONCE).digest()[:16]
    assert (mock.salt, mock.iterations) == (expected_salt, 4096)
    assert mock.salt_b64 == base64.b64encode(expected_salt).decode()
    assert verifiers.mock_scram_secret("ghost", MOCK_NONCE) == mock
    assert verifiers.mock_scram_secret("ghost2", MOCK_NONCE).salt != mock.salt
    assert verifiers.mock_scram_secret("ghost", b"other").salt != mock.salt


def test_sasl_prepare() -> None:
    assert password_math.sasl_prepare(b"plain\x01ascii") == b"plain\x01ascii"  # ASCII untouched
    assert password_math.sasl_prepare("I\u00adX".encode()) == b"IX"  # B.1: mapped to nothing
    assert password_math.sasl_prepare("\u2168".encode()) == b"IX"  # NFKC
    assert password_math.sasl_prepare(b"\xff\xfe") == b"\xff\xfe"  # not UTF-8: raw
    assert password_math.sasl_prepare("a\u0007\u00e9".encode()) == "a\u0007\u00e9".encode()
    with pytest.raises(ClientError) as info:
        password_math.sasl_prepare(b"x" * 1025)
    assert (info.value.sqlstate, info.value.message) == ("54000", "password too long")


# --- method password (cleartext) ---------------------------------------------------------------


def cleartext(secret: RoleSecret | None, body: bytes, user: str = "alice") -> Outcome:
    ex = CleartextExchange(user, secret, now=NOW)
    assert auth_request(ex.start()) == (codes.AUTH_CLEARTEXT_PASSWORD, b"")
    return ex.receive(b"p", body)


@pytest.mark.parametrize("stored", ["scram", "md5"])
def test_cleartext_right_and_wrong(stored: str) -> None:
    secret = scram_secret(PASSWORD) if stored == "scram" else md5_stored(PASSWORD, "alice")
    assert cleartext(role(secret=secret), password_body(PASSWORD)) == Success(b"")
    err = assert_password_failure(cleartext(role(secret=secret), password_body("pencil2")))
    assert err.log_detail == 'Password does not match for user "alice".'


def test_cleartext_applies_saslprep_and_raw_bytes_like_postgresql() -> None:
    assert cleartext(role(secret=scram_secret("I\u00adX")), password_body("IX")) == Success(b"")
    raw = b"caf\xe9"  # LATIN1, not UTF-8: hashed raw
    secret = rfc_scram_secret(raw, iterations=1000, salt=b"0123456789abcdef")
    assert cleartext(role(secret=secret), password_body(raw)) == Success(b"")


@pytest.mark.parametrize(
    ("secret", "detail"),
    [
        (None, 'Role "alice" does not exist.'),
        (RoleSecret("alice", None, None, True), 'User "alice" has no password assigned.'),
        (
            role(password=PASSWORD, until=NOW - timedelta(days=1)),
            'User "alice" has an expired password.',
        ),
        (role(secret="plaintext?"), 'Password of user "alice" is in unrecognized format.'),
    ],
)
def test_cleartext_no_usable_secret(secret: RoleSecret | None, detail: str) -> None:
    err = assert_password_failure(cleartext(secret, password_body(PASSWORD)))
    assert err.log_detail == detail


def test_cleartext_valid_until_future_is_fine() -> None:
    secret = role(password=PASSWORD, until=NOW + timedelta(seconds=1))
    assert cleartext(secret, password_body(PASSWORD)) == Success(b"")


@pytest.mark.parametrize(
    ("body", "sqlstate", "message"),
    [
        (b"\0", "28P01", "empty password returned by client"),
        (b"pencil", "08P01", "invalid password packet size"),
        (b"pencil\0\0", "08P01", "invalid password packet size"),
        (b"pen\0cil\0", "08P01", "invalid password packet size"),
        (b"", "08P01", "invalid password packet size"),
    ],
)
def test_password_packet_checks(body: bytes, sqlstate: str, message: str) -> None:
    for ex in (
        CleartextExchange("alice", role(password=PASSWORD), now=NOW),
        Md5Exchange("alice", role(secret=md5_stored(PASSWORD, "alice")), now=NOW),
    ):
        ex.start()
        err = failed(ex.receive(b"p", body))
        assert (err.sqlstate, err.message) == (sqlstate, message)
        assert ex.state is State.FAILED


def test_password_wrong_message_type() -> None:
    ex = CleartextExchange("alice", role(password=PASSWORD), now=NOW)
    ex.start()
    err = failed(ex.receive(b"Q", b"select 1\0"))
    assert (err.sqlstate, err.message) == (
        "08P01",
        "expected password response, got message type 81",
    )


def test_password_oversized_packet_closes_silently() -> None:
    # The limit bounds the length word, which counts itself: a body of 65532 bytes is too long.
    longest = codes.MAX_AUTH_TOKEN_LENGTH - 4
    err = cleartext(role(password=PASSWORD), b"x" * longest + b"\0")
    assert isinstance(failed(err), SilentClose)
    assert failed(err).message == "invalid message length"
    # Exactly at the limit is read (and here fails as an over-long SASLprep input).
    err2 = failed(cleartext(role(password=PASSWORD), b"x" * (longest - 1) + b"\0"))
    assert (err2.sqlstate, err2.message) == ("54000", "password too long")
    # Against an MD5 secret the length does not matter until the limit.
    md5 = role(secret=md5_stored(PASSWORD, "alice"))
    assert_password_failure(cleartext(md5, b"x" * (longest - 1) + b"\0"))


# --- method md5 --------------------------------------------------------------------------------


def md5_answer(password: str, user: str, salt: bytes) -> bytes:
    inner = hashlib.md5((password + user).encode()).hexdigest().encode()
    return b"md5" + hashlib.md5(inner + salt).hexdigest().encode() + b"\0"


def test_md5_right_and_wrong() -> None:
    secret = role(secret=md5_stored(PASSWORD, "alice"))
    ex = Md5Exchange("alice", secret, b"\x01\x02\x03\x04", now=NOW)
    assert auth_request(ex.start()) == (codes.AUTH_MD5_PASSWORD, b"\x01\x02\x03\x04")
    assert ex.receive(b"p", md5_answer(PASSWORD, "alice", b"\x01\x02\x03\x04")) == Success(b"")
    assert ex.state is State.SUCCEEDED

    ex = Md5Exchange("alice", secret, b"\x01\x02\x03\x04", now=NOW)
    ex.start()
    err = assert_password_failure(
        ex.receive(b"p", md5_answer("nope", "alice", b"\x01\x02\x03\x04"))
    )
    assert err.log_detail == 'Password does not match for user "alice".'


def test_md5_salt_is_random() -> None:
    secret = role(secret=md5_stored(PASSWORD, "alice"))
    salts = {auth_request(Md5Exchange("alice", secret, now=NOW).start())[1] for _ in range(8)}
    assert len(salts) > 1 and all(len(s) == 4 for s in salts)
    ex = Md5Exchange("alice", secret, now=NOW)
    salt = auth_request(ex.start())[1]
    assert ex.receive(b"p", md5_answer(PASSWORD, "alice", salt)) == Success(b"")


def test_md5_replay_with_another_salt_fails() -> None:
    secret = role(secret=md5_stored(PASSWORD, "alice"))
    ex = Md5Exchange("alice", secret, b"\0\0\0\1", now=NOW)
    ex.start()
    assert_password_failure(ex.receive(b"p", md5_answer(PASSWORD, "alice", b"\0\0\0\0")))


@pytest.mark.parametrize(
    ("secret", "detail"),
    [
        (None, 'Role "alice" does not exist.'),
        (
            role(secret=md5_stored(PASSWORD, "alice"), until=NOW - timedelta(1)),
            'User "alice" has an expired password.',
        ),
        (
            role(password=PASSWORD),
            'User "alice" has a password that cannot be used with MD5 authentication.',
        ),
    ],
)
def test_md5_doomed(secret: RoleSecret | None, detail: str) -> None:
    ex = Md5Exchange("alice", secret, b"abcd", now=NOW)
    ex.start()
    err = assert_password_failure(ex.receive(b"p", md5_answer(PASSWORD, "alice", b"abcd")))
    assert err.log_detail == detail


def test_md5_salt_must_be_four_bytes() -> None:
    with pytest.raises(ValueError):
        Md5Exchange("alice", None, b"abc", now=NOW)


# --- method selection (auth.c CheckPWChallengeAuth) --------------------------------------------

MD5_ROLE = role(secret=md5_stored(PASSWORD, "alice"))
SCRAM_ROLE = role(password=PASSWORD)
EXPIRED_MD5 = role(secret=md5_stored(PASSWORD, "alice"), until=NOW - timedelta(1))


@pytest.mark.parametrize(
    ("method", "secret", "encryption", "kind"),
    [
        ("password", MD5_ROLE, "scram-sha-256", CleartextExchange),
        ("password", None, "md5", CleartextExchange),
        ("md5", MD5_ROLE, "scram-sha-256", Md5Exchange),
        ("md5", SCRAM_ROLE, "md5", ScramExchange),
        ("md5", None, "scram-sha-256", ScramExchange),
        ("md5", None, "md5", Md5Exchange),
        ("md5", EXPIRED_MD5, "scram-sha-256", ScramExchange),
        ("md5", EXPIRED_MD5, "md5", Md5Exchange),
        ("md5", role(secret="neither"), "md5", ScramExchange),
        ("scram-sha-256", MD5_ROLE, "md5", ScramExchange),
        ("scram-sha-256", None, "md5", ScramExchange),
        ("scram-sha-256", SCRAM_ROLE, "scram-sha-256", ScramExchange),
    ],
)
def test_choose_exchange(
    method: str, secret: RoleSecret | None, encryption: str, kind: type[Exchange]
) -> None:
    ex = choose_exchange(
        AuthMethod(method),
        "alice",
        secret,
        now=NOW,
        tls_end_point_hash=None,
        password_encryption=encryption,
        mock_nonce=MOCK_NONCE,
    )
    assert type(ex) is kind


def test_choose_exchange_refuses_other_methods_and_settings() -> None:
    kwargs = dict(now=NOW, tls_end_point_hash=None, mock_nonce=MOCK_NONCE)
    with pytest.raises(ValueError):
        choose_exchange(AuthMethod.TRUST, "alice", None, password_encryption="md5", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        choose_exchange(AuthMethod.MD5, "alice", None, password_encryption="on", **kwargs)  # type: ignore[arg-type]


def test_scram_secret_under_md5_method_authenticates_with_scram() -> None:
    ex = choose_exchange(
        AuthMethod.MD5,
        "alice",
        SCRAM_ROLE,
        now=NOW,
        tls_end_point_hash=CERT_HASH,
        password_encryption="scram-sha-256",
        mock_nonce=MOCK_NONCE,
    )
    assert isinstance(ex, ScramExchange)
    outcome, _ = run_scramp(ex, PASSWORD, plus=True)
    assert isinstance(outcome, Success) and ex.channel_bound


def test_md5_secret_under_scram_method_fails_like_a_wrong_password() -> None:
    outcome, server_first = run_scramp(scram(MD5_ROLE), PASSWORD)
    err = assert_password_failure(outcome)
    assert err.log_detail == 'User "alice" does not have a valid SCRAM secret.'
    assert server_first is not None and SERVER_FIRST.fullmatch(server_first)


# --- SCRAM: the good paths ---------------------------------------------------------------------


def test_mechanisms_offered() -> None:
    assert auth_request(scram(SCRAM_ROLE).start()) == (codes.AUTH_SASL, b"SCRAM-SHA-256\0\0")
    assert auth_request(scram(SCRAM_ROLE, tls=True).start()) == (
        codes.AUTH_SASL,
        b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0",
    )
    with pytest.raises(ValueError):
        ScramExchange("alice", None, now=NOW, tls_end_point_hash=b"", mock_nonce=MOCK_NONCE)


def test_scram_right_password_without_tls() -> None:
    ex = scram(SCRAM_ROLE)
    outcome, server_first = run_scramp(ex, PASSWORD)
    assert isinstance(outcome, Success)
    assert ex.state is State.SUCCEEDED and not ex.channel_bound
    match = SERVER_FIRST.fullmatch(server_first or b"")
    assert match is not None and match["i"] == b"4096"
    # The keys PostgreSQL 18 keeps for pass-through: ClientKey hashes to the StoredKey.
    parsed = verifiers.parse_scram_secret(SCRAM_ROLE.rolpassword or "")
    assert parsed is not None and ex.client_key is not None
    assert hashlib.sha256(ex.client_key).digest() == parsed.stored_key
    assert ex.server_key == parsed.server_key


def test_scram_plus_over_tls() -> None:
    ex = scram(SCRAM_ROLE, tls=True)
    outcome, _ = run_scramp(ex, PASSWORD, plus=True)
    assert isinstance(outcome, Success) and ex.channel_bound


def test_scram_without_binding_over_tls_is_allowed_with_n() -> None:
    ex = scram(SCRAM_ROLE, tls=True)
    outcome, _ = run_scramp(ex, PASSWORD)
    assert isinstance(outcome, Success) and not ex.channel_bound


def test_libpq_style_empty_user_name_and_no_initial_response() -> None:
    ex = scram(SCRAM_ROLE)
    ex.start()
    # SASLInitialResponse with length -1: an empty SASLContinue, then the client-first.
    assert auth_request(sent(ex.receive(b"p", sasl_initial("SCRAM-SHA-256", None)))) == (
        codes.AUTH_SASL_CONTINUE,
        b"",
    )
    assert ex.state is State.AWAIT_CLIENT_FIRST
    client = RfcClient()
    code, server_first = auth_request(sent(ex.receive(b"p", client.first())))
    assert (code, ex.state) == (codes.AUTH_SASL_CONTINUE, State.AWAIT_CLIENT_FINAL)
    assert isinstance(ex.receive(b"p", client.final(server_first)), Success)


def test_user_name_in_scram_is_ignored() -> None:
    ex = scram(SCRAM_ROLE)
    client = RfcClient(user=b"mallory")
    server_first = open_scram(ex, "SCRAM-SHA-256", client.first())
    assert isinstance(ex.receive(b"p", client.final(server_first)), Success)


def test_low_iteration_secret_and_extensions_in_client_final() -> None:
    secret = rfc_scram_secret(PASSWORD.encode(), iterations=1, salt=b"tiny")
    ex = scram(role(secret=secret))
    client = RfcClient(first_extra=b",x=ext")
    server_first = open_scram(ex, "SCRAM-SHA-256", client.first())
    assert server_first.endswith(b",s=" + base64.b64encode(b"tiny") + b",i=1")
    assert isinstance(ex.receive(b"p", client.final(server_first, extra=b",z=ignored")), Success)


def test_y_flag_without_tls_is_accepted() -> None:
    ex = scram(SCRAM_ROLE)
    client = RfcClient(gs2=b"y,,")
    server_first = open_scram(ex, "SCRAM-SHA-256", client.first())
    assert isinstance(ex.receive(b"p", client.final(server_first)), Success)


# --- SCRAM: failures that look like a wrong password --------------------------------------------


def test_scram_wrong_password_sends_no_e_attribute() -> None:
    ex = scram(SCRAM_ROLE, tls=True)
    outcome, _ = run_scramp(ex, "wrong", plus=True)
    err = assert_password_failure(outcome)
    assert err.log_detail is None  # PostgreSQL logs no reason for a bad proof
    assert ex.state is State.FAILED and ex.client_key is None


@pytest.mark.parametrize(
    ("secret", "detail"),
    [
        (None, 'Role "alice" does not exist.'),
        (RoleSecret("alice", None, None, True), 'User "alice" has no password assigned.'),
        (
            role(password=PASSWORD, until=NOW - timedelta(seconds=1)),
            'User "alice" has an expired password.',
        ),
        (MD5_ROLE, 'User "alice" does not have a valid SCRAM secret.'),
        (role(secret="SCRAM-SHA-256$4096:bad"), 'User "alice" does not have a valid SCRAM secret.'),
    ],
)
def test_doomed_exchange_is_indistinguishable(secret: RoleSecret | None, detail: str) -> None:
    real = scram(
        role(password=PASSWORD, secret=scram_secret(PASSWORD, salt=secrets.token_bytes(16)))
    )
    wrong_outcome, real_first = run_scramp(real, "wrong")
    doomed = scram(secret)
    assert doomed.doomed
    # Even the right password fails.
    doomed_outcome, doomed_first = run_scramp(doomed, PASSWORD)
    real_match = SERVER_FIRST.fullmatch(real_first or b"")
    doomed_match = SERVER_FIRST.fullmatch(doomed_first or b"")
    assert real_match is not None and doomed_match is not None
    assert [len(real_match[g]) for g in ("snonce", "salt", "i")] == [
        len(doomed_match[g]) for g in ("snonce", "salt", "i")
    ]
    wrong, unknown = failed(wrong_outcome), failed(doomed_outcome)
    assert (wrong.sqlstate, wrong.message, wrong.detail, wrong.severity) == (
        unknown.sqlstate,
        unknown.message,
        unknown.detail,
        unknown.severity,
    )
    assert_password_failure(doomed_outcome)
    assert unknown.log_detail == detail


def test_unknown_user_gets_a_stable_mock_salt() -> None:
    def salt_of(user: str) -> bytes:
        ex = scram(None, user=user)
        first = RfcClient().first()
        match = SERVER_FIRST.fullmatch(open_scram(ex, "SCRAM-SHA-256", first))
        assert match is not None
        return match["salt"]

    expected = base64.b64encode(hashlib.sha256(b"ghost" + MOCK_NONCE).digest()[:16])
    assert salt_of("ghost") == salt_of("ghost") == expected
    assert salt_of("ghost2") != expected


def test_oversized_sasl_message_is_a_password_failure() -> None:
    ex = scram(SCRAM_ROLE)
    ex.start()
    body = sasl_initial("SCRAM-SHA-256", b"n,,n=,r=" + b"a" * 1100)
    err = assert_password_failure(ex.receive(b"p", body))
    assert err.log_detail == "invalid message length"
    # The 1024 bounds the length word, which counts itself (pq_getmessage): 1020 bytes of body
    # are read, 1021 are not.
    head = sasl_initial("SCRAM-SHA-256", b"")
    data = b"n,,n=,r=" + b"a" * (1020 - len(head) - 8)
    assert len(sasl_initial("SCRAM-SHA-256", data)) == 1020
    ex = scram(SCRAM_ROLE)
    ex.start()
    assert isinstance(ex.receive(b"p", sasl_initial("SCRAM-SHA-256", data)), Send)
    ex = scram(SCRAM_ROLE)
    ex.start()
    err = assert_password_failure(ex.receive(b"p", sasl_initial("SCRAM-SHA-256", data + b"a")))
    assert err.log_detail == "invalid message length"
    # And a client-final over the limit fails the same way.
    client = RfcClient()
    ex = scram(SCRAM_ROLE)
    server_first = open_scram(ex, "SCRAM-SHA-256", client.first())
    final = client.final(server_first, extra=b",x=" + b"y" * 1024)
    assert_password_failure(ex.receive(b"p", final))


# --- SCRAM: protocol errors with PostgreSQL's texts ---------------------------------------------


def initial_error(body: bytes, *, tls: bool = False) -> ClientError:
    ex = scram(SCRAM_ROLE, tls=tls)
    ex.start()
    err = failed(ex.receive(b"p", body))
    assert ex.state is State.FAILED
    return err


def first_error(mechanism: str, client_first: bytes, *, tls: bool = False) -> ClientError:
    return initial_error(sasl_initial(mechanism, client_first), tls=tls)


LIBPQ_FIRST = b"n,,n=,r=rOprNGfwEbeRWgbNEkqO"
PLUS_FIRST = b"p=tls-server-end-point,,n=,r=rOprNGfwEbeRWgbNEkqO"


@pytest.mark.parametrize(
    ("body", "tls", "message"),
    [
        (
            sasl_initial("SCRAM-SHA-256-PLUS", PLUS_FIRST),
            False,
            "client selected an invalid SASL authentication mechanism",
        ),
        (
            sasl_initial("SCRAM-SHA-1", LIBPQ_FIRST),
            True,
            "client selected an invalid SASL authentication mechanism",
        ),
        (
            sasl_initial("", LIBPQ_FIRST),
            True,
            "client selected an invalid SASL authentication mechanism",
        ),
        (b"SCRAM-SHA-256", False, "invalid string in message"),
        (b"SCRAM-SHA-256\0\0\0", False, "insufficient data left in message"),
        (b"SCRAM-SHA-256\0\0\0\0\x10abc", False, "insufficient data left in message"),
        (b"SCRAM-SHA-256\0\xff\xff\xff\xfeabc", False, "insufficient data left in message"),
        (sasl_initial("SCRAM-SHA-256", LIBPQ_FIRST) + b"x", False, "invalid message format"),
        (sasl_initial("SCRAM-SHA-256", None) + b"x", False, "invalid message format"),
    ],
)
def test_sasl_initial_response_framing(body: bytes, tls: bool, message: str) -> None:
    err = initial_error(body, tls=tls)
    assert (err.sqlstate, err.message, err.detail) == ("08P01", message, None)


def test_every_truncation_of_an_initial_response_fails_cleanly() -> None:
    whole = sasl_initial("SCRAM-SHA-256", LIBPQ_FIRST)
    for cut in range(len(whole)):
        err = initial_error(whole[:cut])
        assert err.sqlstate == "08P01", (cut, err.message)


def test_sasl_wrong_message_type() -> None:
    ex = scram(SCRAM_ROLE)
    ex.start()
    err = failed(ex.receive(b"Q", b"select 1\0"))
    assert (err.sqlstate, err.message) == ("08P01", "expected SASL response, got message type 81")


@pytest.mark.parametrize(
    ("client_first", "detail"),
    [
        (b"", "The message is empty."),
        (b"n,,n=,r=abc\0def", "Message length does not match input length."),
        (b"x,,n=,r=abc", "Unexpected channel-binding flag \"'x'\"."),
        (b"\x01,,n=,r=abc", 'Unexpected channel-binding flag "0x01".'),
        (b"n;,n=,r=abc", "Comma expected, but found character \"';'\"."),
        (b"n", 'Comma expected, but found character "0x00".'),
        (b"n,x,n=,r=abc", "Unexpected attribute \"'x'\" in client-first-message."),
        (b"n,,r=abc", 'Expected attribute "n" but found "\'r\'".'),
        (b"n,,n,r=abc", 'Expected character "=" for attribute "n".'),
        (b"n,,n=", 'Expected attribute "r" but found "0x00".'),
        (b"n,,n=,r=abc,,", "Attribute expected, but found invalid character \"','\"."),
        (b"n,,n=,r=abc,1=x", "Attribute expected, but found invalid character \"'1'\"."),
        (b"n,,n=,r=abc,x", 'Expected character "=" for attribute "x".'),
        (
            b"p=tls-server-end-point,,n=,r=abc",
            "The client selected SCRAM-SHA-256 without channel binding, but the SCRAM message "
            "includes channel binding data.",
        ),
    ],
)
def test_malformed_client_first(client_first: bytes, detail: str) -> None:
    err = first_error("SCRAM-SHA-256", client_first)
    assert (err.sqlstate, err.message, err.detail) == ("08P01", "malformed SCRAM message", detail)


@pytest.mark.parametrize("flag", [b"n", b"y"])
def test_plus_mechanism_needs_binding_data(flag: bytes) -> None:
    err = first_error("SCRAM-SHA-256-PLUS", flag + b",,n=,r=abc", tls=True)
    assert (err.sqlstate, err.message) == ("08P01", "malformed SCRAM message")
    assert err.detail == (
        "The client selected SCRAM-SHA-256-PLUS, but the SCRAM message does not include channel "
        "binding data."
    )


def test_y_flag_over_tls_is_a_downgrade() -> None:
    err = first_error("SCRAM-SHA-256", b"y,,n=,r=abc", tls=True)
    assert (err.sqlstate, err.message) == ("28000", "SCRAM channel binding negotiation error")
    assert err.detail == (
        "The client supports SCRAM channel binding but thinks the server does not.  "
        "However, this server does support channel binding."
    )


def test_unsupported_channel_binding_type() -> None:
    err = first_error("SCRAM-SHA-256-PLUS", b"p=tls-unique,,n=,r=abc", tls=True)
    assert (err.sqlstate, err.message) == (
        "08P01",
        'unsupported SCRAM channel-binding type "tls-unique"',
    )
    err = first_error("SCRAM-SHA-256-PLUS", b"p=" + b"\xff" * 40 + b",,n=,r=abc", tls=True)
    assert err.message == 'unsupported SCRAM channel-binding type "' + "?" * 30 + '"'


def test_p_flag_must_end_with_comma() -> None:
    err = first_error("SCRAM-SHA-256-PLUS", b"p=tls-server-end-point", tls=True)
    assert err.detail == 'Unexpected attribute "0x00" in client-first-message.'


@pytest.mark.parametrize(
    ("mechanism", "client_first", "tls", "message"),
    [
        (
            "SCRAM-SHA-256",
            b"n,a=admin,n=,r=abc",
            False,
            "client uses authorization identity, but it is not supported",
        ),
        (
            "SCRAM-SHA-256-PLUS",
            b"p=tls-server-end-point,a=x,n=,r=abc",
            True,
            "client uses authorization identity, but it is not supported",
        ),
        (
            "SCRAM-SHA-256",
            b"n,,m=ext,n=,r=abc",
            False,
            "client requires an unsupported SCRAM extension",
        ),
    ],
)
def test_unsupported_features(mechanism: str, client_first: bytes, tls: bool, message: str) -> None:
    err = first_error(mechanism, client_first, tls=tls)
    assert (err.sqlstate, err.message) == ("0A000", message)


def test_non_printable_client_nonce() -> None:
    for nonce in (b"ab\x7fc", b"ab c", b"\xc3\xa9"):
        err = first_error("SCRAM-SHA-256", b"n,,n=,r=" + nonce)
        assert (err.sqlstate, err.message) == ("08P01", "non-printable characters in SCRAM nonce")


def final_error(
    final: Callable[[RfcClient, bytes], bytes],
    *,
    tls: bool = False,
    client: RfcClient | None = None,
    mechanism: str = "SCRAM-SHA-256",
) -> ClientError:
    client = client or RfcClient()
    ex = scram(SCRAM_ROLE, tls=tls)
    server_first = open_scram(ex, mechanism, client.first())
    err = failed(ex.receive(b"p", final(client, server_first)))
    assert ex.state is State.FAILED and ex.client_key is None
    return err


def test_wrong_channel_binding_data() -> None:
    plus = RfcClient(gs2=b"p=tls-server-end-point,,")
    err = final_error(
        lambda c, sf: c.final(sf, cbind=b"p=tls-server-end-point,," + b"\0" * 32),
        tls=True,
        client=plus,
        mechanism="SCRAM-SHA-256-PLUS",
    )
    assert (err.sqlstate, err.message) == ("28000", "SCRAM channel binding check failed")
    # scramp with another certificate's hash: the same refusal.
    ex = scram(SCRAM_ROLE, tls=True)
    outcome, _ = run_scramp(ex, PASSWORD, plus=True, cb_data=hashlib.sha256(b"theirs").digest())
    assert (failed(outcome).sqlstate, failed(outcome).message) == (
        "28000",
        "SCRAM channel binding check failed",
    )


def test_right_channel_binding_by_hand() -> None:
    plus = RfcClient(gs2=b"p=tls-server-end-point,,")
    ex = scram(SCRAM_ROLE, tls=True)
    server_first = open_scram(ex, "SCRAM-SHA-256-PLUS", plus.first())
    final = plus.final(server_first, cbind=b"p=tls-server-end-point,," + CERT_HASH)
    assert isinstance(ex.receive(b"p", final), Success) and ex.channel_bound


@pytest.mark.parametrize("cbind", [b"y,,", b"n,,x", b"p=tls-server-end-point,,"])
def test_unexpected_channel_binding_attribute(cbind: bytes) -> None:
    err = final_error(lambda c, sf: c.final(sf, cbind=cbind))
    assert (err.sqlstate, err.message) == (
        "08P01",
        "unexpected SCRAM channel-binding attribute in client-final-message",
    )


@pytest.mark.parametrize(
    "nonce", [b"rOprNGfwEbeRWgbNEkqO", b"rOprNGfwEbeRWgbNEkqOx" + b"A" * 23, b"x" * 44]
)
def test_nonce_mismatch(nonce: bytes) -> None:
    err = final_error(lambda c, sf: c.final(sf, nonce=nonce))
    assert (err.sqlstate, err.message, err.detail) == (
        "08P01",
        "invalid SCRAM response",
        "Nonce does not match.",
    )


@pytest.mark.parametrize(
    ("mangle", "detail"),
    [
        (lambda f: f.rsplit(b",p=", 1)[0], "Attribute expected, but found end of string."),
        (lambda f: f[:-4], "Malformed proof in client-final-message."),
        (
            lambda f: f.rsplit(b",p=", 1)[0] + b",p=" + base64.b64encode(b"x" * 31),
            "Malformed proof in client-final-message.",
        ),
        (lambda f: f.rsplit(b",p=", 1)[0] + b",p=!!!!", "Malformed proof in client-final-message."),
        (lambda f: f + b",x=trailing", "Garbage found at the end of client-final-message."),
        (lambda f: f[f.index(b",") + 1 :], 'Expected attribute "c" but found "\'r\'".'),
        (lambda f: b"c" + f[2:], 'Expected character "=" for attribute "c".'),
        (lambda f: b"", "The message is empty."),
        (lambda f: f + b"\0", "Message length does not match input length."),
    ],
)
def test_malformed_client_final(mangle: Callable[[bytes], bytes], detail: str) -> None:
    err = final_error(lambda c, sf: mangle(c.final(sf)))
    assert (err.sqlstate, err.message, err.detail) == ("08P01", "malformed SCRAM message", detail)


def test_trailing_commas_are_accepted_like_postgresql() -> None:
    client = RfcClient(first_extra=b",")
    ex = scram(SCRAM_ROLE)
    server_first = open_scram(ex, "SCRAM-SHA-256", client.first())
    assert isinstance(ex.receive(b"p", client.final(server_first) + b","), Success)


# --- the state machine -------------------------------------------------------------------------


def test_illegal_moves_name_state_and_event() -> None:
    ex = scram(SCRAM_ROLE)
    with pytest.raises(IllegalMove) as info:
        ex.receive(b"p", b"")
    assert (info.value.state, info.value.event) == (State.NEW, Input.RECEIVE)
    assert "'receive' is not allowed in state 'new'" in str(info.value)
    ex.start()
    with pytest.raises(IllegalMove):
        ex.start()
    failed(ex.receive(b"Q", b""))
    with pytest.raises(IllegalMove) as info:
        ex.receive(b"p", sasl_initial("SCRAM-SHA-256", LIBPQ_FIRST))
    assert (info.value.state, info.value.event) == (State.FAILED, Input.RECEIVE)

    done = CleartextExchange("alice", SCRAM_ROLE, now=NOW)
    done.start()
    assert done.receive(b"p", password_body(PASSWORD)) == Success(b"")
    with pytest.raises(IllegalMove):
        done.receive(b"p", password_body(PASSWORD))
    with pytest.raises(ValueError):
        CleartextExchange("alice", None, now=NOW).receive(b"", b"")


def test_memoryview_bodies_are_accepted() -> None:
    ex = CleartextExchange("alice", SCRAM_ROLE, now=NOW)
    ex.start()
    assert ex.receive(b"p", memoryview(password_body(PASSWORD))) == Success(b"")


# --- fuzzing: any bytes give Send or Failure, never another exception ---------------------------


@settings(deadline=None)
@given(body=st.binary(max_size=1100), tls=st.booleans())
def test_fuzz_sasl_initial_response(body: bytes, tls: bool) -> None:
    ex = scram(SCRAM_ROLE, tls=tls)
    ex.start()
    assert isinstance(ex.receive(b"p", body), Send | Failure)


@settings(deadline=None)
@given(
    mechanism=st.sampled_from(["SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"]),
    prefix=st.sampled_from([b"n,,", b"y,,", b"p=tls-server-end-point,,", b"n,,n=,r=", b""]),
    data=st.binary(max_size=200),
    tls=st.booleans(),
)
def test_fuzz_client_first(mechanism: str, prefix: bytes, data: bytes, tls: bool) -> None:
    ex = scram(None, tls=tls)
    ex.start()
    assert isinstance(ex.receive(b"p", sasl_initial(mechanism, prefix + data)), Send | Failure)


@settings(deadline=None)
@given(
    data=st.binary(max_size=1100),
    prefix=st.sampled_from([b"", b"c=biws,r=", b"c=biws,r=rOprNGfwEbeRWgbNEkqO", b"c=eSws,"]),
    plus=st.booleans(),
)
def test_fuzz_client_final(data: bytes, prefix: bytes, plus: bool) -> None:
    client = RfcClient(gs2=b"p=tls-server-end-point,," if plus else b"n,,")
    ex = scram(SCRAM_ROLE, tls=plus)
    open_scram(ex, "SCRAM-SHA-256-PLUS" if plus else "SCRAM-SHA-256", client.first())
    outcome = ex.receive(b"p", prefix + data)
    assert isinstance(outcome, Failure)
    assert ex.state is State.FAILED


@settings(deadline=None)
@given(body=st.binary(max_size=300), message_type=st.sampled_from([b"p", b"Q", b"\0"]))
def test_fuzz_password_packets(body: bytes, message_type: bytes) -> None:
    for ex in (
        CleartextExchange("alice", SCRAM_ROLE, now=NOW),
        CleartextExchange("alice", MD5_ROLE, now=NOW),
        Md5Exchange("alice", MD5_ROLE, now=NOW),
    ):
        ex.start()
        assert isinstance(ex.receive(message_type, body), Failure)

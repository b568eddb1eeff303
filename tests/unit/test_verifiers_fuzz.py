"""auth/verifiers.py under hypothesis: what the backend's pg_authid says, read.

* Any result rows give a RoleSecret, None (no such role) or ProtocolViolation, nothing else; any
  ``rolvaliduntil`` text the same, with huge and tiny exponents clamped to the same verdict;
* any stored secret text is a SCRAM verifier, an MD5 one or plaintext, and a well-formed SCRAM
  verifier reads back field for field;
* ``secret_problem`` answers for any secret and any aware time.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import event, given
from hypothesis import strategies as st

from pggate.auth import verifiers
from pggate.auth.verifiers import (
    EXPIRED_ALWAYS,
    VALID_FOREVER,
    PasswordType,
    RoleSecret,
    ScramSecret,
)
from pggate.proto.errors import ProtocolViolation

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = Decimal((datetime.max.replace(tzinfo=UTC) - EPOCH) // timedelta(seconds=1))
EARLIEST = Decimal((datetime.min.replace(tzinfo=UTC) - EPOCH) // timedelta(seconds=1))
TEXT = st.text(st.characters(codec="utf-8") | st.sampled_from(["\udcff", "\udc80"]), max_size=16)
NUMBERS = st.one_of(
    st.decimals(allow_nan=False, allow_infinity=False).map(str),
    st.integers(-(10**20), 10**20).map(str),
    st.builds(
        lambda m, e: f"{m}e{e}",
        st.integers(-99, 99),
        st.integers(-(10**10), 10**10) | st.sampled_from([999999, 1000000, 999999999, -999999999]),
    ),
    st.sampled_from(
        [
            *("Infinity", "-Infinity", "infinity", "NaN", "sNaN", "inf", "", " ", "1_000", "0x10"),
            *("1735689600.123456", "-62135596800", "253402300800", "1e-999999999999999999999"),
        ]
    ),
    TEXT,
)


@given(st.lists(st.lists(st.none() | TEXT | NUMBERS, max_size=5), max_size=3))
def test_any_rows_are_a_secret_none_or_a_protocol_violation(rows: list[list[str | None]]) -> None:
    try:
        secret = verifiers.parse_role_secret(rows)
    except ProtocolViolation as exc:
        event("refused")
        assert exc.sqlstate == "08P01"
        return
    if secret is None:
        assert rows == []
        return
    event("read")
    assert len(rows) == 1 and len(rows[0]) == 4 and rows[0][3] in ("t", "f")
    assert isinstance(secret, RoleSecret) and secret.rolcanlogin is (rows[0][3] == "t")


@given(NUMBERS, st.datetimes(timezones=st.just(UTC)))
def test_any_valid_until_is_a_time_or_a_protocol_violation(text: str, now: datetime) -> None:
    rows: list[list[str | None]] = [["alice", "md5" + "0" * 32, text, "t"]]
    try:
        secret = verifiers.parse_role_secret(rows)
    except ProtocolViolation:
        event("refused")
        return
    assert secret is not None
    until = secret.rolvaliduntil
    assert until is not None and until.tzinfo is not None
    if text.lower() in ("infinity", "-infinity"):
        assert until is (VALID_FOREVER if text[0] != "-" else EXPIRED_ALWAYS)
        return
    seconds = Decimal(text)
    if until in (VALID_FOREVER, EXPIRED_ALWAYS):
        # Clamped only beyond Python's years 1..9999, on the side of the number's sign.
        assert (until == VALID_FOREVER) is (seconds > 0)
        assert seconds > LATEST - 1 or seconds < EARLIEST + 1
    else:
        # Otherwise the exact time, to the microsecond.
        micros = (until - EPOCH) // timedelta(microseconds=1)
        assert abs(Decimal(micros) - seconds.scaleb(6)) <= 1
    problem = verifiers.secret_problem(secret, "alice", now)
    assert (problem is not None) is (until < now)


def scram_text(iterations: int, salt: bytes, stored: bytes, server: bytes) -> str:
    salt_b64, stored_b64, server_b64 = (
        base64.b64encode(x).decode() for x in (salt, stored, server)
    )
    return f"SCRAM-SHA-256${iterations}:{salt_b64}${stored_b64}:{server_b64}"


@given(
    st.integers(1, 2**31 - 1),
    st.binary(min_size=1, max_size=32),
    st.binary(min_size=32, max_size=32),
    st.binary(min_size=32, max_size=32),
)
def test_a_scram_verifier_reads_back(
    iterations: int, salt: bytes, stored: bytes, server: bytes
) -> None:
    text = scram_text(iterations, salt, stored, server)
    parsed = verifiers.parse_scram_secret(text)
    assert parsed == ScramSecret(iterations, base64.b64encode(salt).decode(), salt, stored, server)
    assert verifiers.password_type(text) is PasswordType.SCRAM_SHA_256


SECRETISH = st.one_of(
    TEXT,
    st.builds(
        lambda parts: "$".join(parts),
        st.lists(
            st.sampled_from(["SCRAM-SHA-256", "4096:c2FsdA==", "0:x", "a:b", "", ":", "=="]),
            max_size=4,
        ),
    ),
    st.builds(lambda h: "md5" + h, st.text("0123456789abcdefABCDEF", min_size=30, max_size=34)),
    st.builds(
        scram_text,
        st.integers(0, 2**32),
        st.binary(max_size=4),
        st.binary(min_size=31, max_size=33),
        st.binary(min_size=31, max_size=33),
    ),
)


@given(SECRETISH)
def test_any_secret_text_has_one_type(text: str) -> None:
    kind = verifiers.password_type(text)
    event(str(kind))
    parsed = verifiers.parse_scram_secret(text)
    assert (kind is PasswordType.SCRAM_SHA_256) is (parsed is not None) or verifiers.is_md5_secret(
        text
    )
    if kind is PasswordType.MD5:
        assert text.startswith("md5") and len(text) == 35
        assert set(text[3:]) <= set("0123456789abcdef")
    if parsed is not None:
        assert 0 < parsed.iterations <= 2**31 - 1
        assert len(parsed.stored_key) == len(parsed.server_key) == 32
        assert scram_text(
            parsed.iterations, parsed.salt, parsed.stored_key, parsed.server_key
        ) == text or (parsed.salt_b64 in text)

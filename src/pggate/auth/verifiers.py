"""Where password verifiers come from, and what they say (sans-IO).

pggate does not store passwords: the backend's ``pg_catalog.pg_authid`` does. This module owns
the one query that fetches a role's verifier (:func:`role_secret_sql`), the parsing of its result
(:func:`parse_role_secret`), PostgreSQL's rules for a usable verifier (crypt.c
``get_role_password``: :func:`secret_problem`) and the two stored formats (crypt.c
``get_password_type``, auth-scram.c ``parse_scram_secret``):

* ``SCRAM-SHA-256$<iterations>:<salt base64>$<StoredKey base64>:<ServerKey base64>``
* ``md5`` + 32 lowercase hex digits (``md5(password || username)``)

It also holds the mock secret of auth-scram.c ``mock_scram_secret`` and the SASLprep rule of
auth-scram.c (prepare the password if it is valid UTF-8 without prohibited characters, otherwise
use the raw bytes). The SCRAM and MD5 arithmetic itself lives in :mod:`pggate.proto.password_math`,
shared with pggate's own login to the backend; the names the exchanges use are re-exported here.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Final

from pggate.proto import codes
from pggate.proto.errors import ProtocolViolation
from pggate.proto.messages import wire_bytes
from pggate.proto.password_math import (
    b64decode_strict,
    pg_md5_encrypt,
    salted_password,
    sasl_prepare,
    server_key,
)
from pggate.proto.query import quote_literal

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
# PostgreSQL's 'infinity' / '-infinity' validity: never expires / always expired.
VALID_FOREVER: Final = datetime.max.replace(tzinfo=UTC)
EXPIRED_ALWAYS: Final = datetime.min.replace(tzinfo=UTC)

_MD5_PREFIX: Final = "md5"
_MD5_HEX_LENGTH: Final = 32
_MD5_CHARSET: Final = frozenset("0123456789abcdef")  # crypt.h MD5_PASSWD_CHARSET: lowercase only
_MAX_ITERATIONS: Final = 2**31 - 1  # an int in PostgreSQL (scram_iterations is an int GUC)
# Seconds from the epoch beyond any datetime (year 9999 is about 2.5e11 s away).
_MAX_SECONDS: Final = Decimal(10**12)


@dataclass(frozen=True, slots=True)
class RoleSecret:
    """The ``pg_authid`` columns password authentication needs, for one role.

    ``rolcanlogin`` is carried, not judged: PostgreSQL checks it only after authentication
    (InitPostgres: ``role "%s" is not permitted to log in``), which the backend login reproduces.
    """

    rolname: str
    rolpassword: str | None
    rolvaliduntil: datetime | None  # timezone-aware; VALID_FOREVER / EXPIRED_ALWAYS for ±infinity
    rolcanlogin: bool


def role_secret_sql(user: str) -> str:
    """The one fixed catalog query for ``user``'s verifier.

    Schema-qualified, with the name as an E'' literal, so nothing a client sends can change what
    runs (PgBouncer CVE-2025-12819 built its auth query from client input). ``rolvaliduntil`` is
    fetched as seconds since the epoch so that the backend's TimeZone and DateStyle cannot change
    its meaning; ``EXTRACT`` yields ``Infinity`` / ``-Infinity`` for the infinite timestamps.
    """
    return (
        "SELECT a.rolname, a.rolpassword, EXTRACT(EPOCH FROM a.rolvaliduntil), a.rolcanlogin"
        " FROM pg_catalog.pg_authid a WHERE a.rolname = " + quote_literal(user)
    )


def _validity(text: str | None) -> datetime | None:
    if text is None:
        return None
    if text in ("Infinity", "infinity"):
        return VALID_FOREVER
    if text in ("-Infinity", "-infinity"):
        return EXPIRED_ALWAYS
    try:
        seconds = Decimal(text)
    except InvalidOperation:
        raise ProtocolViolation(f"unexpected rolvaliduntil from backend: {text!r}") from None
    if not seconds.is_finite():
        raise ProtocolViolation(f"unexpected rolvaliduntil from backend: {text!r}")
    # Beyond Python's years 1..9999 (PostgreSQL reaches 294276 AD): clamp, same verdict. Judged
    # before any arithmetic, which a huge exponent would overflow (decimal.Overflow).
    if seconds > _MAX_SECONDS or seconds < -_MAX_SECONDS:  # comparisons never round
        return VALID_FOREVER if seconds > 0 else EXPIRED_ALWAYS
    micros = int(seconds.scaleb(6).to_integral_value())
    try:
        return _EPOCH + timedelta(microseconds=micros)
    except OverflowError:
        return VALID_FOREVER if micros > 0 else EXPIRED_ALWAYS


def parse_role_secret(rows: Sequence[Sequence[str | None]]) -> RoleSecret | None:
    """The result of :func:`role_secret_sql`: no row means the role does not exist."""
    if not rows:
        return None
    if len(rows) != 1 or len(rows[0]) != 4:
        raise ProtocolViolation("unexpected pg_authid result from backend")
    rolname, rolpassword, validuntil, canlogin = rows[0]
    if rolname is None or canlogin not in ("t", "f"):
        raise ProtocolViolation("unexpected pg_authid result from backend")
    return RoleSecret(
        rolname=rolname,
        rolpassword=rolpassword,
        rolvaliduntil=_validity(validuntil),
        rolcanlogin=canlogin == "t",
    )


def secret_problem(secret: RoleSecret | None, user: str, now: datetime) -> str | None:
    """crypt.c get_role_password: why there is no usable verifier (log only), or None.

    ``now`` must be timezone-aware; a password valid until exactly ``now`` is still valid
    (PostgreSQL expires when ``rolvaliduntil < GetCurrentTimestamp()``).
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if secret is None:
        return f'Role "{user}" does not exist.'
    if secret.rolpassword is None:
        return f'User "{user}" has no password assigned.'
    if secret.rolvaliduntil is not None and secret.rolvaliduntil < now:
        return f'User "{user}" has an expired password.'
    return None


class PasswordType(enum.StrEnum):
    """crypt.h PasswordType; the values are ``password_encryption``'s spellings."""

    PLAINTEXT = "plaintext"
    MD5 = "md5"
    SCRAM_SHA_256 = "scram-sha-256"


@dataclass(frozen=True, slots=True)
class ScramSecret:
    """A parsed SCRAM-SHA-256 verifier. ``salt_b64`` is kept as stored: it is what is sent."""

    iterations: int
    salt_b64: str
    salt: bytes
    stored_key: bytes
    server_key: bytes


def parse_scram_secret(secret: str) -> ScramSecret | None:
    """auth-scram.c parse_scram_secret, or None when ``secret`` is not a SCRAM-SHA-256 verifier."""
    scheme, _, rest = secret.partition("$")
    iterations_text, _, rest = rest.partition(":")
    salt_b64, _, rest = rest.partition("$")
    stored_b64, _, server_b64 = rest.partition(":")
    if scheme != codes.SCRAM_SHA_256 or not (iterations_text and salt_b64 and stored_b64):
        return None
    if not (iterations_text.isascii() and iterations_text.isdigit()):
        return None
    iterations = int(iterations_text)
    if not 0 < iterations <= _MAX_ITERATIONS:
        return None
    salt = b64decode_strict(salt_b64)
    stored_key = b64decode_strict(stored_b64)
    server_key = b64decode_strict(server_b64)
    if salt is None or stored_key is None or server_key is None:
        return None
    if len(stored_key) != codes.SCRAM_KEY_LENGTH or len(server_key) != codes.SCRAM_KEY_LENGTH:
        return None
    return ScramSecret(iterations, salt_b64, salt, stored_key, server_key)


def is_md5_secret(secret: str) -> bool:
    """crypt.c get_password_type's MD5 test: ``md5`` + 32 lowercase hex digits."""
    digits = secret[len(_MD5_PREFIX) :]
    return (
        secret.startswith(_MD5_PREFIX)
        and len(digits) == _MD5_HEX_LENGTH
        and set(digits) <= _MD5_CHARSET
    )


def password_type(secret: str) -> PasswordType:
    """crypt.c get_password_type."""
    if is_md5_secret(secret):
        return PasswordType.MD5
    if parse_scram_secret(secret) is not None:
        return PasswordType.SCRAM_SHA_256
    return PasswordType.PLAINTEXT


def md5_secret(password: bytes, user: str) -> bytes:
    """``md5`` + hex(md5(password || username)): the stored form (md5_common.c pg_md5_encrypt)."""
    return pg_md5_encrypt(password, wire_bytes(user))


def scram_verify_plain(password: bytes, secret: ScramSecret) -> bool:
    """auth-scram.c scram_verify_plain_password: recompute ServerKey, compare in constant time."""
    salted = salted_password(sasl_prepare(password), secret.salt, secret.iterations)
    return hmac.compare_digest(server_key(salted), secret.server_key)


def mock_scram_secret(
    user: str, mock_nonce: bytes, iterations: int = codes.SCRAM_DEFAULT_ITERATIONS
) -> ScramSecret:
    """auth-scram.c mock_scram_secret: a plausible verifier for a role that has none.

    The salt is SHA-256(username || cluster mock nonce) cut to 16 bytes, so the same unknown name
    always gets the same salt (a real role's salt does not change between attempts either); the
    keys are zeros and never match, the exchange being doomed anyway. ``iterations`` is the
    server's ``scram_iterations`` (scram_mock_salt's caller uses scram_sha_256_iterations).
    """
    salt = hashlib.sha256(wire_bytes(user) + mock_nonce).digest()[: codes.SCRAM_DEFAULT_SALT_LENGTH]
    zeros = bytes(codes.SCRAM_KEY_LENGTH)
    return ScramSecret(iterations, base64.b64encode(salt).decode(), salt, zeros, zeros)

"""pggate's SCRAM client (proto/scram_client.py) under hypothesis.

* A correct server (RFC 5802 computed here with hashlib/hmac, not with password_math's HMACs)
  always verifies, for any password, salt, count, nonce and channel binding, and with the
  pass-through keys.
* Any server-first-message and any server-final-message ends in a client-final-message or
  ScramClientError, never another exception; a final message is accepted exactly when it
  carries the right signature.
* The iteration cap holds before Hi() runs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from pggate.proto import codes, password_math
from pggate.proto.scram_client import (
    RAW_NONCE_LENGTH,
    Binding,
    ScramClient,
    ScramClientError,
    ScramKeys,
)

MAX_ITERATIONS = 64  # a cap small enough for thousands of Hi() runs
END_POINT = hashlib.sha256(b"the backend's certificate").digest()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def hmac256(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


@dataclass
class Server:
    """The server's half, by the RFC: its verifier, its nonce, then its checks."""

    salted: bytes | None  # None: keys given directly
    client_key: bytes
    server_key: bytes
    salt: bytes
    iterations: int

    @classmethod
    def from_password(cls, password: str, salt: bytes, iterations: int) -> Server:
        prepared = password_math.sasl_prepare(password.encode())  # the shared SASLprep rule
        salted = hashlib.pbkdf2_hmac("sha256", prepared, salt, iterations)
        return cls(
            salted, hmac256(salted, b"Client Key"), hmac256(salted, b"Server Key"), salt, iterations
        )

    def first(self, client_first: bytes, suffix: str) -> tuple[str, str, str]:
        """(gs2 header, client-first-bare, server-first-message)."""
        text = client_first.decode()
        flag, authzid, bare = text.split(",", 2)
        assert authzid == ""
        assert bare.startswith("n=,r=")
        nonce = bare[len("n=,r=") :] + suffix
        return f"{flag},,", bare, f"r={nonce},s={b64(self.salt)},i={self.iterations}"

    def check_final(self, gs2: str, bare: str, first: str, final: bytes, cbind: bytes) -> str:
        """Verify the client-final-message; the server-final-message."""
        text = final.decode()
        without_proof, _, proof_part = text.rpartition(",p=")
        c_attr, r_attr = without_proof.split(",")
        assert c_attr == "c=" + b64(gs2.encode() + cbind)
        assert r_attr == first.split(",")[0]
        auth_message = f"{bare},{first},{without_proof}".encode()
        stored = hashlib.sha256(self.client_key).digest()
        signature = hmac256(stored, auth_message)
        proof = base64.b64decode(proof_part, validate=True)
        recovered = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        assert hashlib.sha256(recovered).digest() == stored, "the client proof does not verify"
        return "v=" + b64(hmac256(self.server_key, auth_message))


PASSWORDS = st.text(max_size=20).filter(lambda p: len(p.encode("utf-8", "surrogatepass")) <= 1024)
NONCE_SUFFIXES = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=","),
    min_size=1,
    max_size=24,
)
BINDINGS = st.sampled_from(list(Binding))


def new_client(secret: str | ScramKeys, binding: Binding, nonce: str | None = None) -> ScramClient:
    return ScramClient(
        secret,
        binding=binding,
        end_point_hash=END_POINT if binding is Binding.BOUND else None,
        max_iterations=MAX_ITERATIONS,
        nonce=nonce,
    )


@settings(deadline=None)  # the first SASLprep may take over 200 ms on a busy machine
@given(
    password=PASSWORDS,
    salt=st.binary(min_size=1, max_size=32),
    iterations=st.integers(1, MAX_ITERATIONS),
    suffix=NONCE_SUFFIXES,
    binding=BINDINGS,
    pass_through=st.booleans(),
)
def test_a_correct_server_always_verifies(
    password: str, salt: bytes, iterations: int, suffix: str, binding: Binding, pass_through: bool
) -> None:
    server = Server.from_password(password, salt, iterations)
    secret: str | ScramKeys = (
        ScramKeys(server.client_key, server.server_key) if pass_through else password
    )
    client = new_client(secret, binding)
    assert client.mechanism == (
        codes.SCRAM_SHA_256_PLUS if binding is Binding.BOUND else codes.SCRAM_SHA_256
    )
    first = client.client_first()
    gs2, bare, server_first = server.first(first, suffix)
    assert gs2 == ("p=tls-server-end-point,," if binding is Binding.BOUND else f"{binding.value},,")
    # libpq's client nonce: 18 random bytes in base64.
    assert len(base64.b64decode(bare[len("n=,r=") :], validate=True)) == RAW_NONCE_LENGTH
    final = client.client_final(server_first.encode())
    cbind = END_POINT if binding is Binding.BOUND else b""
    server_final = server.check_final(gs2, bare, server_first, final, cbind)
    assert not client.finished
    client.server_final(server_final.encode())
    assert client.finished


# --- hostile or broken servers ------------------------------------------------------------------

CLIENT_NONCE = "Y2xpZW50LW5vbmNlLTEyMzQ1Njc4"


def attribute_values() -> st.SearchStrategy[str]:
    return st.one_of(st.text(max_size=12), st.sampled_from(["", "=", "==", ",", "\0", "\ufffd"]))


def mostly(draw: st.DrawFn, valid: st.SearchStrategy[str], wrong: st.SearchStrategy[str]) -> str:
    """A valid value three times in four, else a wrong one."""
    return draw(valid if draw(st.integers(0, 3)) else wrong)


@st.composite
def server_firsts(draw: st.DrawFn) -> bytes:
    """Mostly the shape of a server-first-message, with any part of it wrong."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=80))
    nonce = mostly(
        draw,
        NONCE_SUFFIXES.map(lambda s: CLIENT_NONCE + s),
        st.one_of(
            st.just(CLIENT_NONCE),  # no server part
            st.just(CLIENT_NONCE[:-1] + "x"),
            attribute_values(),
        ),
    )
    salt = mostly(
        draw,
        st.binary(min_size=0, max_size=20).map(b64),
        st.one_of(
            st.sampled_from(["", "=", "AAA", "AA=A", " QUFB", "QUFB\n", "QUFB===", "Q"]),
            attribute_values(),
        ),
    )
    iterations = mostly(
        draw,
        st.integers(1, 2 * MAX_ITERATIONS).map(str),
        st.one_of(
            st.integers(-3, 0).map(str),
            st.sampled_from(
                ["", " 5", "5 ", "+5", "0x10", "1_0", "\uff15", "4096", "9" * 30, "9" * 5000, "1e3"]
            ),
            attribute_values(),
        ),
    )
    parts = [f"r={nonce}", f"s={salt}", f"i={iterations}"]
    how = draw(st.sampled_from(["as is"] * 5 + ["drop", "swap", "rename", "extra", "cut"]))
    if how == "drop":
        del parts[draw(st.integers(0, 2))]
    elif how == "swap":
        a, b = draw(st.permutations([0, 1, 2]))[:2]
        parts[a], parts[b] = parts[b], parts[a]
    elif how == "rename":
        at = draw(st.integers(0, 2))
        parts[at] = draw(st.sampled_from("xyzRSI=")) + parts[at][1:]
    elif how == "extra":
        parts.append(draw(st.text(max_size=10)))
    text = ",".join(parts)
    if how == "cut":
        text = text[: draw(st.integers(0, len(text)))]
    encoded = text.encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 9)) == 0:
        encoded += draw(st.binary(min_size=1, max_size=4))  # invalid UTF-8 too
    return encoded


@given(server_firsts(), BINDINGS, st.sampled_from(["pencil", "pässword", "\u00ad"]), st.booleans())
def test_any_server_first_message_is_answered_or_refused(
    message: bytes, binding: Binding, password: str, pass_through: bool
) -> None:
    keys = ScramKeys(bytes(32), bytes(range(32)))
    client = new_client(keys if pass_through else password, binding, nonce=CLIENT_NONCE)
    try:
        final = client.client_final(message)
    except ScramClientError as exc:
        event(f"refused: {str(exc).split(' (')[0]}")
        assert str(exc)
        assert not client.finished
        return
    event("answered")
    # Only a message that extends our nonce, with a valid salt and a positive count, gets here.
    text = message.decode("utf-8", "replace")
    nonce, salt, iterations = (part[2:] for part in text.split(",")[:3])
    assert nonce.startswith(CLIENT_NONCE) and len(nonce) > len(CLIENT_NONCE)
    assert password_math.b64decode_strict(salt) is not None
    assert int(iterations) >= 1
    if not pass_through:
        assert int(iterations) <= MAX_ITERATIONS  # the cap, before Hi()
    cbind = client._gs2_header().encode() + (END_POINT if binding is Binding.BOUND else b"")
    c_attr, r_attr, p_attr = final.decode().split(",")
    assert c_attr == "c=" + b64(cbind)
    assert r_attr == "r=" + nonce
    assert len(base64.b64decode(p_attr.removeprefix("p="), validate=True)) == 32


def test_the_cap_refuses_before_hi_runs() -> None:
    client = new_client("pencil", Binding.NONE, nonce=CLIENT_NONCE)
    with pytest.raises(ScramClientError, match="more than backend_scram_max_iterations"):
        client.client_final(f"r={CLIENT_NONCE}x,s=QUFB,i={2**31 - 1}".encode())


@st.composite
def server_finals(draw: st.DrawFn, signature: str) -> bytes:
    """The right final message, damaged or not, or something else entirely."""
    right = "v=" + signature
    how = draw(
        st.sampled_from(
            ["right", "trailing", "flip", "cut", "error", "other", "bytes", "re-encoded"]
        )
    )
    if how == "right":
        return right.encode()
    if how == "trailing":
        return (right + "," + draw(st.text(max_size=8))).encode("utf-8", "surrogatepass")
    if how == "flip":
        at = draw(st.integers(2, len(right) - 1))
        char = draw(st.sampled_from("AB+/=a \0"))
        return (right[:at] + char + right[at + 1 :]).encode()
    if how == "cut":
        return right[: draw(st.integers(0, len(right) - 1))].encode()
    if how == "error":
        return ("e=" + draw(st.text(max_size=12))).encode("utf-8", "surrogatepass")
    if how == "re-encoded":
        # The same 32 bytes with the two spare bits of the last digit set: still them.
        raw = base64.b64decode(signature)
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        last = alphabet.index(signature[-2]) | draw(st.integers(0, 3))
        text = signature[:-2] + alphabet[last] + "="
        assert base64.b64decode(text) == raw
        return ("v=" + text).encode()
    if how == "other":
        return draw(st.text(max_size=60)).encode("utf-8", "surrogatepass")
    return draw(st.binary(max_size=60))


@given(st.data(), BINDINGS)
def test_any_server_final_message_is_verified_or_refused(
    data: st.DataObject, binding: Binding
) -> None:
    server = Server(None, bytes(range(32)), bytes(range(32, 64)), b"salt", 4096)
    client = new_client(ScramKeys(server.client_key, server.server_key), binding)
    gs2, bare, first = server.first(client.client_first(), "srv")
    final = client.client_final(first.encode())
    cbind = END_POINT if binding is Binding.BOUND else b""
    signature = server.check_final(gs2, bare, first, final, cbind).removeprefix("v=")
    message = data.draw(server_finals(signature), label="server-final-message")
    expected = base64.b64decode(signature)
    text = message.decode("utf-8", "replace")
    value = text.split(",")[0].removeprefix("v=") if text.startswith("v=") else None
    try:
        client.server_final(message)
    except ScramClientError as exc:
        event("refused")
        assert not client.finished
        if text.startswith("e="):
            assert str(exc) == f"error received from server in SCRAM exchange: {text[2:]}"
        else:
            assert value is None or password_math.b64decode_strict(value) != expected
        return
    event("verified")
    assert client.finished
    assert value is not None and password_math.b64decode_strict(value) == expected

"""pg_hba.conf / pg_ident.conf regexes: PostgreSQL's ARE meaning, evaluated by RE2.

What each construct becomes, what is refused and why, the two reported defects through the hba
matching API, captures for pg_ident.conf, and a fuzz test: any pattern compiles or is refused.
The comparison with a real PostgreSQL is tests/integration/test_regex_differential.py.
"""

from __future__ import annotations

from dataclasses import replace
from ipaddress import ip_address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_hba_fakes import FakeFiles
from test_hba_match import TCP

from pggate.errors import ConfigError
from pggate.hba import load_hba, load_ident
from pggate.hba.regex import PgRegex, RegexRefused, compile_regex
from pggate.proto.messages import wire_str

HBA = "/etc/pg/pg_hba.conf"
IDENT = "/etc/pg/pg_ident.conf"
LOOPBACK = replace(TCP, address=ip_address("127.0.0.1"))


def refusal(pattern: str, *, captures: bool = False) -> str:
    with pytest.raises(RegexRefused) as info:
        compile_regex(pattern, captures=captures)
    return info.value.reason


def search(pattern: str, subject: str) -> bool:
    return compile_regex(pattern).search(subject)


# --- the two reported defects, through pg_hba.conf matching -------------------------------------


def test_catastrophic_pattern_is_linear() -> None:
    """``^(a+)+$`` backtracked for seconds in Python's re; RE2 answers at once."""
    policy = load_hba(
        HBA,
        FakeFiles({HBA: "host all /^(a+)+$ 127.0.0.1/32 reject\nhost all all 0.0.0.0/0 trust\n"}),
        ssl_enabled=False,
        warn=lambda _: None,
    )
    rule = policy.find(replace(LOOPBACK, user="a" * 26 + "!"))
    assert rule is not None and rule.line_number == 2
    rule = policy.find(replace(LOOPBACK, user="a" * 26))
    assert rule is not None and rule.line_number == 1


def test_posix_class_reject_line_matches() -> None:
    """``[[:alnum:]_]`` is a POSIX class in an ARE; to Python's re it was a set of letters, so
    the reject line silently never matched and the trust line below let the user in."""
    policy = load_hba(
        HBA,
        FakeFiles(
            {HBA: "host all /^[[:alnum:]_]+$ 127.0.0.1/32 reject\nhost all all 0.0.0.0/0 trust\n"}
        ),
        ssl_enabled=False,
        warn=lambda _: None,
    )
    for user in ("app_user", "Bob42", "x"):
        rule = policy.find(replace(LOOPBACK, user=user))
        assert rule is not None and rule.line_number == 1, user
    rule = policy.find(replace(LOOPBACK, user="alice@example.com"))
    assert rule is not None and rule.line_number == 2


# --- translation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "translation"),
    [
        ("^alice$", r"\Aalice\z"),  # $ is the end of the string only
        (r"\Aa\Z", r"\Aa\z"),
        ("a.b", r"a[\x00-\xff]b"),  # . matches a newline too
        (r"\b\B", r"\x08\x5c"),  # backspace and backslash, not boundaries
        (r"\y\Y", r"\b\B"),
        (r"\mjoe", r"\bjoe"),  # a word character follows: \m is a boundary
        (r"joe\M", r"joe\b"),
        ("[[:<:]]x[[:>:]]", r"\bx\b"),
        (r"\d\w\s", r"[\x30-\x39][\x30-\x39\x41-\x5a\x5f\x61-\x7a][\x09-\x0d\x20]"),
        (r"\D", r"[\x00-\x2f\x3a-\xff]"),
        ("[[:alnum:]_]", r"[\x30-\x39\x41-\x5a\x5f\x61-\x7a]"),
        ("[[:cntrl:]]", r"[\x00-\x1f\x7f-\x9f]"),  # hard-wired, C1 controls included
        ("[]a]", r"[\x5d\x61]"),  # a leading ] is literal
        ("[^]a]", r"[\x00-\x5c\x5e-\x60\x62-\xff]"),
        ("[a-]", r"[\x2d\x61]"),
        (r"[\d-]", r"[\x2d\x30-\x39]"),
        ("[[.hyphen.][=a=]]", r"[\x2d\x61]"),
        ("(?i)ab", r"[\x41\x61][\x42\x62]"),
        ("(?i)é", r"\xc3\xa9"),  # bytes of a non-ASCII letter do not fold
        ("(?i)[[:lower:]]", r"[\x41-\x5a\x61-\x7a]"),
        ("é+", r"\xc3\xa9+"),  # a quantifier applies to the last byte
        ("a{2,3}b{2}c{1,}d{2,}", "a{2,3}b{2}c+d{2,}"),
        ("x{", r"x\x7b"),  # { not followed by a digit is a literal
        ("a{,2}", r"a\x7b\x2c2\x7d"),
        ("a*?b+?c??", "a*b+c?"),  # greediness never changes whether a match exists
        ("(a|b)(?:c)", "(?:(?:a|b))(?:c)"),
        ("(?:ab){2}(a)?", "(?:ab){2}(?:a)?"),
        ("(a){0}b", "b"),
        ("***=a.b", r"a\x2eb"),
        ("***:(?i)a", r"[\x41\x61]"),
        ("(?x) a b # comment", "ab"),
        ("a(?#comment)*", "a*"),
        ("(?n)^a.$", r"(?m:^)a[\x00-\x09\x0b-\xff](?m:$)"),
        ("(?n)[^a]", r"[\x00-\x09\x0b-\x60\x62-\xff]"),
        (r"\x41\u0042\U00000043\104\0\cA", r"ABCD\x00\x01"),
        (r"\u0100", r"[^\x00-\xff]"),  # a character no byte can be: never matches
        (r"\é", r"\xc3\xa9"),
        ("", ""),
    ],
)
def test_translation(pattern: str, translation: str) -> None:
    assert compile_regex(pattern).translation == translation


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        ("^a$", "a\n", False),  # $ is not "before a final newline"
        ("a.b", "a\nb", True),
        (r"\yjoe\y", "x joe y", True),
        (r"\yjoe\y", "xjoe", False),
        (r"\yjoe", "éjoe", True),  # bytes >= 0x80 are not word characters
        (r"\mjoe", "_joe", False),
        ("(?i)alice", "ALICE", True),
        ("(?i)é", "É", False),
        ("(?i)k", "K", True),
        ("^.{5}$", "josé", True),  # five bytes
        ("***=a.b", "a.b", True),
        ("***=a.b", "axb", False),
        (r"back\bspace", "back\bspace", True),
        (r"back\Bslash", "back\\slash", True),
        ("[[:alpha:]]", "é", False),
        ("[[:cntrl:]]", "ł", True),  # c5 82
        ("^[^a]", wire_str(b"\xe9"), True),
    ],
)
def test_meaning(pattern: str, subject: str, expected: bool) -> None:
    assert search(pattern, subject) is expected


# --- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("a(", "parentheses () not balanced"),
        ("a)", "parentheses () not balanced"),
        ("[a", "brackets [] not balanced"),
        ("a{1", "braces {} not balanced"),
        ("a{2,1}", "invalid repetition count(s)"),
        ("a{256}", "invalid repetition count(s)"),
        ("[z-a]", "invalid character range"),
        ("[a-c-e]", "invalid character range"),
        ("a**", "quantifier operand invalid"),
        ("^*", "quantifier operand invalid"),
        (r"\y+", "quantifier operand invalid"),
        ("(?", "quantifier operand invalid"),
        ("a(?i)", "quantifier operand invalid"),  # options only at the start
        ("(?z)", "invalid embedded option"),
        ("(?i", "invalid embedded option"),
        ("***?", "invalid regexp (reg version 0.8)"),
        ("***x", "quantifier operand invalid"),
        (r"\q", "invalid escape \\ sequence"),
        ("\\", "invalid escape \\ sequence"),
        (r"\x", "invalid escape \\ sequence"),
        (r"\u12", "invalid escape \\ sequence"),
        (r"\U7fffffff", "invalid escape \\ sequence"),
        (r"[\y]", "invalid escape \\ sequence"),
        (r"\1", "invalid backreference number"),
        (r"(a\1)", "invalid backreference number"),
        (r"(a){0}\1", "invalid backreference number"),
        ("[[:foo:]]", "invalid character class"),
        ("[a[:<:]]", "invalid character class"),
        ("[[.foo.]]", "invalid collating element"),
        ("[[=ab=]]", "invalid collating element"),
    ],
)
def test_postgresql_errors(pattern: str, message: str) -> None:
    assert refusal(pattern) == message


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        (r"(a)\1", "back-references"),
        ("(?=a)", "lookahead and lookbehind constraints"),
        ("(?<!a)b", "lookahead and lookbehind constraints"),
        (r"\m", r"\m or [[:<:]] next to characters"),
        (r".\M", r"\M or [[:>:]] next to characters"),
        (r"(?:\m|b).", r"\m or [[:<:]] next to characters"),
        ("(?b)a", "BRE syntax"),
        ("(?e)a", "ERE syntax"),
        ("(" * 65 + ")" * 65, "parentheses nested more than 64 deep"),
        (r"\w{255}" * 4, "more than 1000 atoms"),
        (r"(?:\y|a)" * 9, "more than 8 word-boundary or newline constraints"),
        (r"(?:\ya)*", "a constraint"),
        (r"(?:a{255}){5}", "more than 1000 atoms"),
        (r"(?:a{100}){20}", "more than 1000 atoms"),
        (r"(?:(?:){40}){40}", "too large for RE2"),  # RE2: at most 1000 repetitions
    ],
)
def test_unsupported(pattern: str, reason: str) -> None:
    assert refusal(pattern).startswith("not supported by pggate: " + reason)


def test_refusal_is_a_config_error_of_the_line() -> None:
    with pytest.raises(ConfigError) as info:
        load_hba(HBA, FakeFiles({HBA: "# x\nhost all /(a)\\1 all trust\n"}), ssl_enabled=False,
                 warn=lambda _: None)  # fmt: skip
    assert str(info.value) == (
        'invalid regular expression "(a)\\1": not supported by pggate: back-references, '
        f'line 2 of configuration file "{HBA}"'
    )


# --- captures ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "subject", "group"),
    [
        (r"^(.*)@EXAMPLE\.COM$", "alice@EXAMPLE.COM", b"alice"),
        (r"^(a|ab)(c|bcd)(d*)$", "abcd", b"ab"),  # Perl (and RE2) would say "a"
        (r"^a?(?:ab)?(b*)$", "ab", b""),  # Perl (and RE2) would say "b"
        (r"^(.*)(.*)$", "abc", b"abc"),
        ("(x*)", "axx", b""),  # leftmost first, then longest
        ("^(a)?b$", "b", None),
        ("^(a)?b$", "ab", b"a"),
        ("(a){0}b", "b", None),
        ("^a", "a", None),  # no group at all
        (r"^(jos.)", "josé", b"jos\xc3"),  # byte-wise: half a character
    ],
)
def test_first_group(pattern: str, subject: str, group: bytes | None) -> None:
    assert compile_regex(pattern, captures=True).first_group(subject) == (True, group)


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("^(a+)+$", "\\1 of a repeated group"),
        ("^(.*?)@", "\\1 of an expression with non-greedy quantifiers"),
        ("^(a*)?b$", "\\1 of (...)? whose group can match the empty string"),
        ("^(?:(a)|b)c", "\\1 of a group inside an alternation (|)"),
    ],
)
def test_capture_refusals(pattern: str, reason: str) -> None:
    compile_regex(pattern)  # fine for a boolean search
    assert refusal(pattern, captures=True) == "not supported by pggate: " + reason


def test_first_group_needs_captures() -> None:
    with pytest.raises(ValueError, match="without captures"):
        compile_regex("(a)").first_group("a")


def test_ident_refuses_only_where_the_group_is_used() -> None:
    files = {IDENT: "m /^(a+)+$ bob\nm /^(a+)+$ +admins\nm /^(a+)+$ /^\\\\1\n"}
    assert len(load_ident(IDENT, FakeFiles(files), warn=lambda _: None).lines) == 3
    with pytest.raises(ConfigError) as info:
        load_ident(IDENT, FakeFiles({IDENT: "m /^(a+)+$ \\1\n"}), warn=lambda _: None)
    assert str(info.value) == (
        'invalid regular expression "^(a+)+$": not supported by pggate: \\1 of a repeated '
        f'group, line 1 of configuration file "{IDENT}"'
    )


def test_ident_substitutes_bytes() -> None:
    """hba.c copies the group's bytes: half a UTF-8 character plus its other half in the map
    is the whole character again."""
    text = "m /^(jos.) \\1" + wire_str(b"\xa9") + "\n"  # PG-USERNAME: \1, then byte a9
    maps = load_ident(IDENT, FakeFiles({IDENT: text}), warn=lambda _: None)
    assert maps.check_usermap("m", "josé", "josé") is None


# --- fuzz ----------------------------------------------------------------------------------------

ARE_PIECES = st.sampled_from(
    ["a", "b", "é", ".", "*", "+", "?", "*?", "{", "}", "{2}", "{1,3}", "{0}", ",", "(", ")",
     "(?:", "(?=", "(?<!", "(?#x)", "|", "[", "]", "[^", "-", "^", "$", "\\", "\\y", "\\m",
     "\\M", "\\1", "\\x4", "\\u00e9", "\\d", "\\W", "[:alpha:]", "[[:<:]]", "[.", ".]", "[=",
     "=]", "***", "***=", "***:", "(?i)", "(?x)", "(?n)", "(?b)", "#", " ", "\n", "\0"]
)  # fmt: skip
PATTERNS = st.one_of(
    st.text(max_size=40),
    st.lists(ARE_PIECES, max_size=20).map("".join),
)


@settings(max_examples=1500, deadline=None)
@given(pattern=PATTERNS, subject=st.text(max_size=20))
def test_any_pattern_compiles_or_is_refused(pattern: str, subject: str) -> None:
    for captures in (False, True):
        try:
            regex = compile_regex(pattern, captures=captures)
        except RegexRefused as exc:
            assert exc.reason
            continue
        assert isinstance(regex, PgRegex)
        found = regex.search(subject)
        if captures:
            matched, group = regex.first_group(subject)
            assert matched is found
            assert group is None or group in subject.encode("utf-8", "surrogateescape")

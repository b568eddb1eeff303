"""pggate's pg_hba.conf / pg_ident.conf regexes against PostgreSQL's own regex engine.

The reference is a real PostgreSQL (Debian's 15 when installed, else the embedded wheel's) on a
throwaway cluster, asked through SQL: ``~`` for the boolean search hba.c does, ``regexp_match``
for the first capture group pg_ident.conf substitutes. The database is created with encoding
SQL_ASCII and the C collation, and every value is passed as raw bytes, because that is how the
postmaster runs ``regexec_auth_token``: SQL_ASCII, so one byte is one character, and
``C_COLLATION_OID``.

For every pattern: if PostgreSQL rejects it, pggate must too (with PostgreSQL's message when
the reason is PostgreSQL's); if pggate refuses it, it must be one of the expected refusals; else
every name must give the same answer, and the same group 1 wherever pggate would use it.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator

import psycopg
import pytest
from conftest import DEBIAN_PG_BINDIR
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import reference_server

from pggate import embedded
from pggate.hba.regex import PgRegex, RegexRefused, compile_regex
from pggate.proto.messages import wire_bytes, wire_str

pytestmark = pytest.mark.integration

NAMES = [
    "",
    "a",
    "b",
    "ab",
    "aab",
    "abcd",
    "aaaa",
    "a" * 26 + "!",
    "alice",
    "Alice",
    "ALICE",
    "bob",
    "joe",
    "joe_x",
    "x_joe",
    "joe-x",
    "MiXeD_Case9",
    "app_user",
    "user_42",
    "42",
    "x.y.z",
    "svc-web",
    "foo-bar",
    "alice@EXAMPLE.COM",
    "admin/alice@EXAMPLE.COM",
    "a b",
    "tab\tname",
    "new\nline",
    "back\\slash",
    "back\bspace",
    "dollar$",
    "brace{2}",
    "josé",  # UTF-8: 6a 6f 73 c3 a9
    "łukasz",  # c5 82: 0x82 is a C1 control, in [[:cntrl:]]
    "日本語",
    wire_str(b"jos\xe9"),  # a LATIN1 name: not valid UTF-8, still just bytes
    ("long_name_" + "x" * 40 + "_with_63_bytes_end")[:63],
]
assert len(wire_bytes(NAMES[-1])) == 63

TOO_COMPLEX = "(?:\\y|a)" * 17  # PostgreSQL: "regular expression is too complex"
TOO_LARGE = "\\w{255}" * 400  # likewise

PATTERNS = [
    # the two reported defects
    r"^(a+)+$",
    r"^[[:alnum:]_]+$",
    # typical pg_hba.conf / pg_ident.conf patterns
    r"^(.*)@EXAMPLE\.COM$",
    r"^admin/(.*)@EXAMPLE\.COM$",
    r"^(.*)$",
    r"^([a-z]+)_[0-9]+$",
    r"^(user|app)_(.*)$",
    r"^(?:svc-)?(.*)$",
    r"^([^.]*)\.(.*)$",
    r"^[^@]+@",
    r"^app_",
    r"\.",
    r"^$",
    r"",
    # escapes that differ from Perl's
    r"\yjoe\y",
    r"\Yoe",
    r"\mjoe",
    r"joe\M",
    r"[[:<:]]joe",
    r"joe[[:>:]]",
    r"^\w+\M",
    r"back\bspace",
    r"back\Bslash",
    r"^\d+$",
    r"\D",
    r"^\w+$",
    r"\W",
    r"\s",
    r"^\S+$",
    r"\Aa",
    r"e\Z",
    r"\x41",
    r"\u0041",
    r"\U00000061",
    r"\101",
    r"\0",
    r"\cI",
    r"\t",
    r"\e|\v|\f|\r|\a|\n",
    r"\$",
    r"\{2\}",
    r"\é",
    # brackets
    r"[]a]",
    r"[^]a]+$",
    r"[a-]",
    r"[--/]",
    r"[[:alpha:][:digit:]]",
    r"[[:upper:]]",
    r"(?i)[[:upper:]]",
    r"[[:cntrl:]]",
    r"[[:punct:]]",
    r"[[:space:][:blank:]]",
    r"^[[:xdigit:]]{2}",
    r"^[[:ascii:]]+$",
    r"^[[:word:]]+$",
    r"[^[:graph:]]",
    r"[[:print:]]",
    r"[[.hyphen.]]",
    r"[[.space.]]",
    r"[[=a=]]",
    r"[\d_]",
    r"[\w.-]+$",
    r"[^\s]",
    r"[\D]",
    r"^[a\W]",
    r"[é]",
    r"^[^a-z]",
    # bounds and quantifiers
    r"a{2}",
    r"^a{2,3}$",
    r"a{2,}",
    r"^(?:ab){1,2}$",
    r"x{",
    r"a{,2}",
    r"^.{5}$",
    r"^.{6}$",
    r"a*?b",
    r"^a+?",
    r"^(.*?)@",
    r"^(a+?)a*$",
    r"a(?#comment)*b",
    r"a|",
    r"^()$",
    # case-insensitivity and the directors
    r"(?i)^ALICE$",
    r"(?i)[a-c]+",
    r"(?i)é",
    r"(?i)^JOS[^A-Z]",
    r"(?c)^alice$",
    r"***=a.b",
    r"***=x.y.z",
    r"***:^a",
    r"(?q)$",
    r"(?x) ^ a l i c e $  # spaced out",
    r"(?n)^line$",
    r"(?s)^new.line$",
    r"(?p)new.line",
    r"(?w)^line",
    r"(?n)[^a]line",
    # captures: PostgreSQL's dissection rules, not Perl's
    r"^(a|ab)(c|bcd)(d*)$",
    r"^a?(?:ab)?(b*)$",
    r"^(a)?b$",
    r"^(a*)?b$",
    r"(x*)",
    r"^(.*)(.*)$",
    r"([a-z])([0-9]*)",
    r"(a){0}b",
    r"(?:(a)b)?",
    r"((a)|b)+",
    r"^(\w+)\M",
    # unsupported by pggate: refused
    r"(a)\1",
    r"(?=a)",
    r"(?<=a)b",
    r"\m",
    r"(?b)a",
    r"(?e)a",
    # rejected by PostgreSQL itself
    r"a(",
    r"a)",
    r"[z-a]",
    r"a**",
    r"\q",
    r"(?z)a",
    r"***?",
    r"[[:foo:]]",
    r"\1",
    r"a{2,1}",
    r"a{256}",
    r"[a",
    r"(?",
    "\\",
    r"^*",
    r"[a[:<:]]",
    r"[\y]",
    TOO_COMPLEX,
    TOO_LARGE,
]

# Valid in PostgreSQL, refused by pggate (reason starts with "not supported by pggate").
EXPECTED_REFUSED = {
    r"(a)\1": "back-references",
    r"(?=a)": "lookahead and lookbehind constraints",
    r"(?<=a)b": "lookahead and lookbehind constraints",
    r"\m": r"\m or [[:<:]] next to characters",
    r"(?b)a": "BRE syntax",
    r"(?e)a": "ERE syntax",
}
# PostgreSQL's errors pggate replaces by its own, stricter, limit.
EXPECTED_OWN_LIMIT = {
    TOO_COMPLEX: "more than 8 word-boundary or newline constraints",
    TOO_LARGE: "more than 1000 atoms",
}
# Accepted for hba (a boolean search) but refused where \1 would be substituted.
EXPECTED_CAPTURE_REFUSED = {
    r"^(a+)+$": "repeated group",
    r"^(.*?)@": "non-greedy",
    r"^(a+?)a*$": "non-greedy",
    r"^(a*)?b$": "can match the empty string",
    r"(?:(a)b)?": "repeated group",
    r"((a)|b)+": "repeated group",
}


@pytest.fixture(scope="module")
def postgres() -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A database as the postmaster sees names: SQL_ASCII, C collation."""
    found = DEBIAN_PG_BINDIR if (DEBIAN_PG_BINDIR / "postgres").exists() else None
    bindir = embedded.find_postgres_bindir(str(found) if found else None)
    with reference_server(bindir, hba="") as cluster:
        with psycopg.connect(cluster.conninfo, autocommit=True) as conn:
            conn.execute(
                "CREATE DATABASE regex ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' "
                "TEMPLATE template0"
            )
        with psycopg.connect(cluster.conninfo, dbname="regex", autocommit=True) as conn:
            yield conn


Answer = tuple[bool, bytes | None]


def postgres_answers(
    conn: psycopg.Connection[tuple[object, ...]], pattern: str, names: list[str]
) -> list[Answer] | str:
    """(matches, group 1 per regexp_match) for each name, or PostgreSQL's compile error."""
    try:
        rows = conn.execute(
            """
            SELECT convert_from(n, 'SQL_ASCII') ~ (convert_from(%(p)s, 'SQL_ASCII') COLLATE "C"),
                   textsend((regexp_match(convert_from(n, 'SQL_ASCII'),
                                          convert_from(%(p)s, 'SQL_ASCII') COLLATE "C"))[1])
            FROM unnest(%(names)s::bytea[]) WITH ORDINALITY AS t(n, i) ORDER BY i
            """,
            {"p": wire_bytes(pattern), "names": [wire_bytes(n) for n in names]},
        ).fetchall()
    except psycopg.errors.InvalidRegularExpression as exc:
        return str(exc).removeprefix("invalid regular expression: ")
    answers: list[Answer] = []
    for match, group in rows:
        assert isinstance(match, bool) and (group is None or isinstance(group, bytes))
        answers.append((match, group))
    return answers


def pggate_compile(pattern: str, *, captures: bool) -> PgRegex | str:
    try:
        return compile_regex(pattern, captures=captures)
    except RegexRefused as exc:
        return exc.reason


def test_patterns_against_postgresql(postgres: psycopg.Connection[tuple[object, ...]]) -> None:
    refused: dict[str, str] = {}
    capture_refused: dict[str, str] = {}
    rejected: list[str] = []
    compared = captures_compared = 0
    for pattern in PATTERNS:
        reference = postgres_answers(postgres, pattern, NAMES)
        ours = pggate_compile(pattern, captures=False)
        if isinstance(reference, str):
            rejected.append(pattern)
            assert isinstance(ours, str), f"{pattern!r}: PostgreSQL says {reference!r}"
            if pattern in EXPECTED_OWN_LIMIT:
                assert EXPECTED_OWN_LIMIT[pattern] in ours
            else:
                assert ours == reference, pattern
            continue
        if isinstance(ours, str):
            refused[pattern] = ours
            continue
        for name, (matches, _) in zip(NAMES, reference, strict=True):
            assert ours.search(name) is matches, (pattern, name, ours.translation)
            compared += 1
        with_captures = pggate_compile(pattern, captures=True)
        if isinstance(with_captures, str):
            capture_refused[pattern] = with_captures
            continue
        for name, (matches, group) in zip(NAMES, reference, strict=True):
            found, ours_group = with_captures.first_group(name)
            assert found is matches, (pattern, name)
            if with_captures.groups:  # without groups regexp_match returns the whole match
                assert ours_group == group, (pattern, name, ours_group, group)
                captures_compared += 1
            else:
                assert ours_group is None
    assert set(refused) == set(EXPECTED_REFUSED)
    for pattern, reason in refused.items():
        assert reason.startswith("not supported by pggate: " + EXPECTED_REFUSED[pattern])
    assert set(capture_refused) == set(EXPECTED_CAPTURE_REFUSED)
    for pattern, reason in capture_refused.items():
        assert reason.startswith("not supported by pggate: ")
        assert EXPECTED_CAPTURE_REFUSED[pattern] in reason
    # What was compared, for the record (-s shows it).
    print(
        f"\n{len(PATTERNS)} patterns x {len(NAMES)} names: {compared} answers equal, "
        f"{captures_compared} groups equal; refused {len(refused)} valid patterns "
        f"(+{len(capture_refused)} only for \\1), {len(rejected)} rejected by PostgreSQL and pggate"
    )


CLASSES = [
    "[[:alnum:]]",
    "[[:alpha:]]",
    "[[:ascii:]]",
    "[[:blank:]]",
    "[[:cntrl:]]",
    "[[:digit:]]",
    "[[:graph:]]",
    "[[:lower:]]",
    "[[:print:]]",
    "[[:punct:]]",
    "[[:space:]]",
    "[[:upper:]]",
    "[[:xdigit:]]",
    "[[:word:]]",
    r"\d",
    r"\s",
    r"\w",
    r"\W",
    r"\y.",
    ".",
    "(?i)[[:lower:]]",
    "(?i)[^a]",
    "(?i)[Z-a]",
    "(?n).",
    "(?n)[^x]",
]


@pytest.mark.parametrize("pattern", CLASSES)
def test_every_byte(postgres: psycopg.Connection[tuple[object, ...]], pattern: str) -> None:
    """Each class against each non-NUL byte: the C collation, byte by byte."""
    options, _, atom = pattern.rpartition(")") if pattern.startswith("(?") else ("", "", pattern)
    anchored = f"{options}{')' if options else ''}^{atom}$"
    names = [wire_str(bytes([byte])) for byte in range(1, 256)]
    reference = postgres_answers(postgres, anchored, names)
    regex = compile_regex(anchored)
    assert not isinstance(reference, str)
    assert [regex.search(name) for name in names] == [matches for matches, _ in reference]


ATOMS = st.sampled_from(
    ["a", "b", "x", ".", "[ab]", "[^a]", r"\w", r"\W", r"\d", "[[:alpha:]]", "@", "é", "(?:)"]
)
ANCHORS = st.sampled_from(["^", "$", r"\y", r"\Y", r"\m", r"\M", r"\A", r"\Z"])
QUANTIFIERS = st.sampled_from(["", "", "", "*", "+", "?", "{2}", "{1,2}", "{2,}", "{0}", "*?"])


def _extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    group = st.builds(
        lambda opening, left, alternative, right: f"{opening}{left}{alternative}{right})",
        st.sampled_from(["(", "(", "(?:"]),
        inner,
        st.sampled_from(["", "", "|"]),
        inner,
    )
    piece = st.one_of(ANCHORS, st.builds(operator.add, st.one_of(ATOMS, group), QUANTIFIERS))
    return st.lists(piece, min_size=1, max_size=4).map("".join)


GENERATED = st.recursive(st.builds(operator.add, ATOMS, QUANTIFIERS), _extend, max_leaves=10)
GENERATED_NAMES = st.lists(
    st.lists(st.sampled_from(["a", "b", "x", "ab", "@", "é", "_", " ", "1"]), max_size=10).map(
        "".join
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(pattern=GENERATED, names=GENERATED_NAMES)
def test_generated_patterns(
    postgres: psycopg.Connection[tuple[object, ...]], pattern: str, names: list[str]
) -> None:
    """Random AREs (groups, alternation, quantifiers, constraints): the same answers."""
    reference = postgres_answers(postgres, pattern, names)
    ours = pggate_compile(pattern, captures=True)
    if isinstance(ours, str) and not isinstance(reference, str):
        assert ours.startswith("not supported by pggate: "), pattern
        ours = pggate_compile(pattern, captures=False)
    if isinstance(reference, str):
        assert isinstance(ours, str), f"{pattern!r}: PostgreSQL says {reference!r}"
        assert ours == reference or ours.startswith("not supported by pggate: "), pattern
        return
    if isinstance(ours, str):
        assert ours.startswith("not supported by pggate: "), pattern
        return
    for name, (matches, group) in zip(names, reference, strict=True):
        assert ours.search(name) is matches, (pattern, name, ours.translation)
        if ours.capture_plan is not None and ours.groups:
            assert ours.first_group(name) == (matches, group), (pattern, name)

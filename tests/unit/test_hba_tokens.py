"""Tokenizer quirks of pg_hba.conf / pg_ident.conf, as PostgreSQL 16+ has them."""

from __future__ import annotations

import pytest
from test_hba_fakes import FakeFiles

from pggate.errors import ConfigError
from pggate.hba.tokens import AuthLine, logical_lines, next_token, tokenize_auth_file

HBA = "/etc/pg/pg_hba.conf"


def lines_of(text: str, extra: dict[str, str] | None = None) -> list[AuthLine]:
    warnings: list[str] = []
    files = FakeFiles({HBA: text, **(extra or {})})
    out: list[AuthLine] = tokenize_auth_file(HBA, files, warn=warnings.append)
    assert warnings == []
    return out


def strings(line: AuthLine) -> list[list[str]]:
    return [[t.string for t in field] for field in line.fields]


def test_blank_and_comment_lines_are_skipped_but_counted() -> None:
    out = lines_of("# header\n\n   \nlocal all all trust # tail\n\t\nhost all all all md5\n")
    assert [(line.line_number, strings(line)) for line in out] == [
        (4, [["local"], ["all"], ["all"], ["trust"]]),
        (6, [["host"], ["all"], ["all"], ["all"], ["md5"]]),
    ]
    assert out[0].raw_line == "local all all trust # tail"
    assert out[0].file == HBA


@pytest.mark.parametrize(
    ("text", "expected", "quoted"),
    [
        ('"my db"', "my db", True),
        ('"a""b"', 'a"b', True),
        ('al"l"', "all", False),  # only a quote before the first character counts
        ('""', "", True),
        ('"a#b"', "a#b", True),
        ('"a,b"', "a,b", True),
        ('a"b c"d', "ab cd", False),
        ('"unterminated', "unterminated", True),
        ('""abc', "abc", True),
    ],
)
def test_quoting(text: str, expected: str, quoted: bool) -> None:
    token, _ = next_token(text, 0)
    assert token is not None
    assert (token.text, token.initial_quote) == (expected, quoted)


@pytest.mark.parametrize(
    ("text", "fields"),
    [
        ("a,b c", [["a", "b"], ["c"]]),
        ("a, b c", [["a", "b"], ["c"]]),  # blanks after a comma stay in the list
        ("a ,b c", [["a"], ["b"], ["c"]]),  # blanks before a comma end the field
        ("a, c", [["a", "c"]]),
        ("a,", [["a"]]),
        (",a", [["a"]]),
        ("a,,b", [["a", "b"]]),
        ("a#b c", [["a"]]),
        ("a\tb\rc", [["a"], ["b"], ["c"]]),
    ],
)
def test_fields_and_comma_lists(text: str, fields: list[list[str]]) -> None:
    (line,) = lines_of(text)
    assert strings(line) == fields


def test_quoted_keyword_flag_is_kept() -> None:
    (line,) = lines_of('local "all" all trust')
    assert line.fields[1][0].quoted
    assert not line.fields[1][0].is_keyword("all")
    assert line.fields[2][0].is_keyword("all")


def test_backslash_continuation_and_line_numbers() -> None:
    out = lines_of("local all \\\n  all trust\nhost all all all \\\r\n md5\nlocal x y z\n")
    assert [(line.line_number, strings(line)) for line in out] == [
        (1, [["local"], ["all"], ["all"], ["trust"]]),
        (3, [["host"], ["all"], ["all"], ["all"], ["md5"]]),
        (5, [["local"], ["x"], ["y"], ["z"]]),
    ]
    assert out[0].raw_line == "local all   all trust"


def test_continuation_inside_comment_and_quote() -> None:
    out = lines_of('local all all trust # note \\\nhost all all all md5\nlocal "a \\\nb" u peer\n')
    assert [strings(line) for line in out] == [
        [["local"], ["all"], ["all"], ["trust"]],
        [["local"], ["a b"], ["u"], ["peer"]],
    ]
    assert out[1].line_number == 3


def test_double_backslash_joins_once_only() -> None:
    assert list(logical_lines("a\\\\\n\nb")) == [(1, "a\\"), (3, "b")]


def test_nul_ends_the_line() -> None:
    (line,) = lines_of("local all all trust\0 garbage")
    assert strings(line) == [["local"], ["all"], ["all"], ["trust"]]


def test_crlf_line_endings() -> None:
    (line,) = lines_of("local all all trust\r\n")
    assert line.raw_line == "local all all trust"


def test_at_file_expands_relative_to_including_file() -> None:
    (line,) = lines_of(
        "local a,@dbs,z all trust",
        {"/etc/pg/dbs": 'b c\n# comment\nd,"e f"\n'},
    )
    assert strings(line)[1] == ["a", "b", "c", "d", "e f", "z"]
    assert line.fields[1][4].quoted


def test_at_file_quirks() -> None:
    extra = {"/etc/pg/my dbs": "x", "/abs/list": "y"}
    (line,) = lines_of('local "@dbs",@,@"my dbs",@/abs/list all trust', extra)
    assert strings(line)[1] == ["@dbs", "@", "x", "y"]


def test_at_file_empty_removes_the_field() -> None:
    (line,) = lines_of("local @empty all all trust", {"/etc/pg/empty": "# nothing\n"})
    assert strings(line) == [["local"], ["all"], ["all"], ["trust"]]


def test_at_file_missing_is_a_line_error() -> None:
    (line,) = lines_of("local @nope all trust")
    assert line.error == 'could not open file "/etc/pg/nope": No such file or directory'
    assert (line.file, line.line_number) == (HBA, 1)


def test_nested_at_file_errors_surface_on_the_outer_line() -> None:
    (line,) = lines_of("\nlocal @a all trust", {"/etc/pg/a": "x @b", "/etc/pg/b": "@a"})
    assert line.error == 'could not open file "/etc/pg/a": maximum nesting depth exceeded'
    assert line.line_number == 2


def test_include_splices_lines_with_their_own_location() -> None:
    out = lines_of(
        "local a a trust\ninclude sub/more.conf\nlocal c c trust\n",
        {
            "/etc/pg/sub/more.conf": "\nlocal b b trust\ninclude ../last.conf\n",
            "/etc/pg/last.conf": "local l l trust",
        },
    )
    assert [(line.file, line.line_number, strings(line)[1][0]) for line in out] == [
        (HBA, 1, "a"),
        ("/etc/pg/sub/more.conf", 2, "b"),
        ("/etc/pg/last.conf", 1, "l"),
        (HBA, 3, "c"),
    ]


def test_include_needs_exactly_two_fields() -> None:
    out = lines_of("include a b\ninclude\n")
    assert [strings(line) for line in out] == [[["include"], ["a"], ["b"]], [["include"]]]


def test_include_missing_is_an_error_on_the_directive_line() -> None:
    (line,) = lines_of("\ninclude nope.conf")
    assert line.error == 'could not open file "/etc/pg/nope.conf": No such file or directory'
    assert line.line_number == 2


def test_include_if_exists_missing_warns() -> None:
    warnings: list[str] = []
    files = FakeFiles({HBA: "include_if_exists nope.conf\nlocal all all trust"})
    out = tokenize_auth_file(HBA, files, warn=warnings.append)
    assert len(out) == 1
    assert warnings == [
        'skipping missing authentication file "/etc/pg/nope.conf", '
        f'line 1 of configuration file "{HBA}"'
    ]


def test_include_if_exists_other_errors_still_fail() -> None:
    files = FakeFiles({HBA: "include_if_exists sub", "/etc/pg/sub/x.conf": ""})
    (line,) = tokenize_auth_file(HBA, files, warn=lambda _: None)
    assert line.error == 'could not open file "/etc/pg/sub": Is a directory'


def test_include_dir_filters_and_sorts() -> None:
    extra = {
        "/etc/pg/conf.d/b.conf": "local b b trust",
        "/etc/pg/conf.d/a.conf": "local a a trust",
        "/etc/pg/conf.d/.hidden.conf": "local h h trust",
        "/etc/pg/conf.d/c.conf.bak": "local x x trust",
        "/etc/pg/conf.d/.conf": "local y y trust",
        "/etc/pg/conf.d/B.conf": "local B B trust",
    }
    out = lines_of("include_dir conf.d", extra)
    assert [strings(line)[1][0] for line in out] == ["B", "a", "b"]
    assert out[0].file == "/etc/pg/conf.d/B.conf"


@pytest.mark.parametrize(
    ("directive", "error"),
    [
        ('include_dir " "', 'empty configuration directory name: " "'),
        (
            "include_dir nowhere",
            'could not open configuration directory "/etc/pg/nowhere": No such file or directory',
        ),
    ],
)
def test_include_dir_errors(directive: str, error: str) -> None:
    (line,) = lines_of(directive)
    assert line.error == error


def test_include_dir_empty_is_fine() -> None:
    files = FakeFiles({HBA: "include_dir d\nlocal all all trust"}, empty_dirs=("/etc/pg/d",))
    assert len(tokenize_auth_file(HBA, files, warn=lambda _: None)) == 1


def test_include_nesting_depth_limit() -> None:
    files = FakeFiles({"/d/a.conf": "include a.conf"})
    out = tokenize_auth_file("/d/a.conf", files, warn=lambda _: None)
    assert len(files.reads) == 11  # depths 0..10 open, depth 11 is refused
    (line,) = out
    assert line.error == 'could not open file "/d/a.conf": maximum nesting depth exceeded'


def test_top_level_file_missing() -> None:
    with pytest.raises(ConfigError) as info:
        tokenize_auth_file("/nope", FakeFiles({}), warn=lambda _: None)
    assert str(info.value) == 'could not open file "/nope": No such file or directory'

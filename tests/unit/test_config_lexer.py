"""postgresql.conf syntax as guc-file.l reads it: tokens, strings, errors, includes, fuzz."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pggate.config.files import DiskFiles
from pggate.config.lexer import (
    MAX_SYNTAX_ERRORS,
    ConfEntry,
    ConfigSyntaxError,
    is_bare_value,
    parse_config,
    parse_text,
    quote,
    read_config,
    unquote,
)
from pggate.errors import ConfigError

FILE = "/cfg/pggate.conf"


class NoFiles:
    """A filesystem with nothing in it: every include fails cleanly."""

    def read_text(self, path: str) -> str:
        raise FileNotFoundError(2, "No such file or directory", path)

    def list_dir(self, path: str) -> list[str]:
        raise FileNotFoundError(2, "No such file or directory", path)


def pairs(text: str) -> list[tuple[str, str]]:
    entries, errors = parse_text(text, FILE, NoFiles())
    assert errors == []
    return [(e.name, e.value) for e in entries]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("port = 5432", [("port", "5432")]),
        ("port 5432", [("port", "5432")]),
        ("port=5432# comment", [("port", "5432")]),
        ("  # only a comment\n\n\t\n", []),
        ("", []),
        ("Port = 1", [("Port", "1")]),
        ("my.custom = on", [("my.custom", "on")]),
        ("x = 'it''s'", [("x", "it's")]),
        ("x = ''", [("x", "")]),
        (r"x = 'a\nb\tc\\d\'e\bf\fg\rh'", [("x", "a\nb\tc\\d'e\bf\fg\rh")]),
        (r"x = '\101\1012\7'", [("x", "AA2\x07")]),
        (r"x = '\q\ '", [("x", "q ")]),
        (r"x = 'a\000b'", [("x", "a")]),  # a C string ends at NUL
        ("x = 30s", [("x", "30s")]),
        ("x = 8MB", [("x", "8MB")]),
        ("x = 0x1F", [("x", "0x1F")]),
        ("x = -1.5e3", [("x", "-1.5e3")]),
        ("x = .5", [("x", ".5")]),
        ("x = +7", [("x", "+7")]),
        ("x = a.b.c", [("x", "a.b.c")]),  # unquoted string: longer than a qualified id
        ("x = host:5432/db-1", [("x", "host:5432/db-1")]),
        ("x = café", [("x", "café")]),
        ("x = 'a b' \r\ny = 2\r\n", [("x", "a b"), ("y", "2")]),
        ("x = 1\nx = 2\n", [("x", "1"), ("x", "2")]),  # the loader lets the last one win
    ],
)
def test_statements(text: str, expected: list[tuple[str, str]]) -> None:
    assert pairs(text) == expected


def test_entries_carry_file_and_line() -> None:
    entries, _ = parse_text("# header\n\na = 1\n  b 'two'\n", FILE, NoFiles())
    assert entries == [ConfEntry("a", "1", FILE, 3), ConfEntry("b", "two", FILE, 4)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x = ", "line 1, near end of line"),
        ("x = \n", "line 1, near end of line"),
        ("x", "line 1, near end of line"),
        ("= 1", 'line 1, near token "="'),
        ("5 = x", 'line 1, near token "5"'),
        ("'x' = 1", "line 1, near token \"'x'\""),
        ("x = 1 2", 'line 1, near token "2"'),
        ("x = = 1", 'line 1, near token "="'),
        ("x = a.b", 'line 1, near token "a.b"'),  # PostgreSQL's quirk: quote dotted values
        ("include x.conf", 'line 1, near token "x.conf"'),
        ("x = /tmp/sock", 'line 1, near token "/"'),
        ("x = 'unterminated", 'line 1, near token "\'"'),
        ("x = 'no\n", 'line 1, near token "\'"'),
        ("x = 1.5GB", 'line 1, near token "GB"'),
        ("\n\n# c\nx = ;", 'line 4, near token ";"'),
    ],
)
def test_syntax_errors(text: str, message: str) -> None:
    entries, errors = parse_text(text, FILE, NoFiles())
    assert entries == []
    [error] = errors
    assert isinstance(error, ConfigSyntaxError)
    assert str(error) == f'syntax error in file "{FILE}" {message}'
    assert (error.file, error.line) == (FILE, int(message.split()[1].rstrip(",")))


def test_errors_resynchronise_at_the_next_line() -> None:
    entries, errors = parse_text("a = \nb = 1\nc d e\nf = 2", FILE, NoFiles())
    assert [(e.name, e.line) for e in entries] == [("b", 2), ("f", 4)]
    assert [e.line for e in errors] == [1, 3]


def test_too_many_syntax_errors_abandon_the_file() -> None:
    text = "bad bad bad\n" * (MAX_SYNTAX_ERRORS + 20) + "good = 1\n"
    entries, errors = parse_text(text, FILE, NoFiles())
    assert entries == []
    assert len(errors) == MAX_SYNTAX_ERRORS + 1
    assert str(errors[-1]) == f'too many syntax errors found, abandoning file "{FILE}"'


def test_parse_config_raises_the_first_error(tmp_path: Path) -> None:
    conf = tmp_path / "p.conf"
    conf.write_text("a = \nb = ;\n")
    with pytest.raises(ConfigSyntaxError, match="line 1, near end of line"):
        parse_config(str(conf))


@pytest.mark.parametrize(
    "value",
    ["", "plain", "it's", "back\\slash", "tab\there", "new\nline", "\b\f\r", "x'y'z", "é ü"],
)
def test_quote_round_trips(value: str) -> None:
    assert unquote(quote(value)) == value
    assert pairs(f"x = {quote(value)}") == [("x", value)]


@given(st.text().filter(lambda s: "\0" not in s))
def test_quote_round_trips_anything(value: str) -> None:
    assert pairs(f"x = {quote(value)}\n") == [("x", value)]


@pytest.mark.parametrize(
    ("value", "bare"),
    [
        ("on", True),
        ("5432", True),
        ("1min", True),
        ("-1.5", True),
        ("a.b.c", True),
        ("", False),
        ("a.b", False),
        ("two words", False),
        ("/abs", False),
        ("x#y", False),
    ],
)
def test_is_bare_value(value: str, bare: bool) -> None:
    assert is_bare_value(value) is bare


# --- includes --------------------------------------------------------------------------------


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def names(entries: list[ConfEntry]) -> list[str]:
    return [e.name for e in entries]


def test_include_is_relative_to_the_including_file(tmp_path: Path) -> None:
    top = write(tmp_path / "top.conf", "a = 1\ninclude 'sub/inner.conf'\nz = 9\n")
    inner = write(tmp_path / "sub" / "inner.conf", "b = 2\nINCLUDE 'more.conf'\n")
    write(tmp_path / "sub" / "more.conf", "c = 3\n")
    entries = parse_config(top)
    assert names(entries) == ["a", "b", "c", "z"]
    assert entries[1] == ConfEntry("b", "2", inner, 1)
    assert entries[3].line == 3


def test_include_missing_file_is_an_error_at_the_directive(tmp_path: Path) -> None:
    top = write(tmp_path / "top.conf", "a = 1\ninclude 'nope.conf'\nb = 2\n")
    entries, errors = read_config(top)
    assert names(entries) == ["a", "b"]  # parsing goes on, as PostgreSQL's does
    [error] = errors
    missing = tmp_path / "nope.conf"
    assert str(error) == (
        f'could not open configuration file "{missing}": No such file or directory, '
        f'line 2 of configuration file "{top}"'
    )


def test_include_if_exists(tmp_path: Path) -> None:
    top = write(
        tmp_path / "top.conf", "include_if_exists 'nope.conf'\ninclude_if_exists 'yes.conf'\n"
    )
    write(tmp_path / "yes.conf", "a = 1\n")
    assert names(parse_config(top)) == ["a"]


class Unreadable(NoFiles):
    def read_text(self, path: str) -> str:
        if path.endswith("secret.conf"):
            raise PermissionError(13, "Permission denied", path)
        return "include_if_exists 'secret.conf'\n"


def test_include_if_exists_still_reports_unreadable_files() -> None:
    """Only a missing file is skipped: one that exists but can't be read is an error."""
    with pytest.raises(ConfigError) as info:
        parse_config("/cfg/top.conf", Unreadable())
    assert str(info.value) == (
        'could not open configuration file "/cfg/secret.conf": Permission denied, '
        'line 1 of configuration file "/cfg/top.conf"'
    )


def test_include_dir_reads_conf_files_in_byte_order(tmp_path: Path) -> None:
    top = write(tmp_path / "top.conf", "include_dir 'conf.d'\nlast = 1\n")
    d = tmp_path / "conf.d"
    for name, key in [
        ("b.conf", "b"),
        ("a.conf", "a"),
        ("B.conf", "upper_b"),
        (".hidden.conf", "hidden"),
        (".conf", "dot"),
        ("x.conf~", "backup"),
        ("README", "readme"),
    ]:
        write(d / name, f"{key} = 1\n")
    (d / "dir.conf").mkdir()
    assert names(parse_config(top)) == ["upper_b", "a", "b", "last"]


def test_include_dir_missing(tmp_path: Path) -> None:
    top = write(tmp_path / "top.conf", "include_dir 'nope'\n")
    with pytest.raises(ConfigError) as info:
        parse_config(top)
    assert str(info.value) == (
        f'could not open configuration directory "{tmp_path / "nope"}": '
        f'No such file or directory, line 1 of configuration file "{top}"'
    )


@pytest.mark.parametrize(
    ("directive", "message"),
    [
        ("include ''", 'empty configuration file name: ""'),
        ("include_if_exists ' '", 'empty configuration file name: " "'),
        ("include_dir ''", 'empty configuration directory name: ""'),
    ],
)
def test_empty_include_names(tmp_path: Path, directive: str, message: str) -> None:
    top = write(tmp_path / "top.conf", f"\n{directive}\n")
    with pytest.raises(ConfigError) as info:
        parse_config(top)
    assert str(info.value) == f'{message}, line 2 of configuration file "{top}"'


def test_direct_recursion(tmp_path: Path) -> None:
    top = write(tmp_path / "top.conf", "include 'top.conf'\n")
    with pytest.raises(ConfigError) as info:
        parse_config(top)
    assert str(info.value).startswith(f'configuration file recursion in "{top}"')


def test_include_depth_limit(tmp_path: Path) -> None:
    """Ten levels of include are fine; the eleventh is PostgreSQL's nesting-depth error."""
    for i in range(12):
        write(tmp_path / f"f{i}.conf", f"v{i} = {i}\ninclude 'f{i + 1}.conf'\n")
    entries, errors = read_config(str(tmp_path / "f0.conf"))
    assert names(entries) == [f"v{i}" for i in range(11)]
    [error] = errors
    assert str(error) == (
        'could not open configuration file "f11.conf": maximum nesting depth exceeded, '
        f'line 2 of configuration file "{tmp_path / "f10.conf"}"'
    )


def test_indirect_loop_hits_the_depth_limit(tmp_path: Path) -> None:
    write(tmp_path / "a.conf", "include 'b.conf'\n")
    write(tmp_path / "b.conf", "include 'a.conf'\n")
    with pytest.raises(ConfigError, match="maximum nesting depth exceeded"):
        parse_config(str(tmp_path / "a.conf"))


def test_disk_files(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"a\r\nb\xff\n")
    files = DiskFiles()
    assert files.read_text(str(tmp_path / "f")) == "a\r\nb\udcff\n"
    assert files.list_dir(str(tmp_path)) == ["f"]
    with pytest.raises(FileNotFoundError):
        files.read_text(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError):
        files.list_dir(str(tmp_path / "missing"))


# --- fuzz ------------------------------------------------------------------------------------

_CONFISH = st.lists(
    st.sampled_from([*"abcxyz_019.=#'\\ \t\r\n-+:/eE\"é\0", "include ", "include_dir "]),
    max_size=100,
).map("".join)


@given(st.one_of(st.text(max_size=300), _CONFISH))
def test_fuzz_any_text_gives_entries_or_config_errors(text: str) -> None:
    entries, errors = parse_text(text, FILE, NoFiles())
    assert all(isinstance(e, ConfEntry) and e.file == FILE for e in entries)
    assert all(isinstance(e, ConfigError) for e in errors)
    assert all("\0" not in e.value for e in entries)

"""Tokenizing pg_hba.conf / pg_ident.conf the way PostgreSQL 16+ does (``hba.c``).

Owns: logical lines (backslash continuation), fields, comma lists, quoting, ``#`` comments,
``@file`` token inclusion and the ``include`` / ``include_if_exists`` / ``include_dir``
directives. Every resulting line remembers its file, line number and raw text, for error
messages and the ``Connection matched file ... line ...`` log detail.

Errors do not stop tokenizing: like PostgreSQL, a bad line is kept with its error so that the
loader can report every problem in the file, then refuse the whole file.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from pggate.errors import ConfigError
from pggate.hba.regex import PgRegex, RegexRefused, compile_regex
from pggate.pgtext import FileSource, absolute_location, os_error_text

# conffiles.h: CONF_FILE_START_DEPTH / CONF_FILE_MAX_DEPTH.
START_DEPTH = 0
MAX_DEPTH = 10

# hba.c:pg_isblank: space, tab and CR separate tokens (newline ends the line).
_BLANKS = frozenset(" \t\r")

Warn = Callable[[str], None]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class AuthToken:
    """One token of a field.

    ``quoted`` is PostgreSQL's "initial quote" flag: it is true only when a double quote came
    before the first character, and it alone removes keyword meaning (``al"l"`` is the keyword).
    ``regex`` is set for tokens starting with ``/`` in fields that allow regular expressions.
    """

    string: str
    quoted: bool = False
    regex: PgRegex | None = None

    def is_keyword(self, keyword: str) -> bool:
        return not self.quoted and self.string == keyword

    @property
    def is_member_check(self) -> bool:
        """``+role`` (unquoted): membership in ``role`` rather than a name."""
        return not self.quoted and self.string.startswith("+")


Field = tuple[AuthToken, ...]


@dataclass(frozen=True, slots=True)
class AuthLine:
    """A logical line: its fields, where it came from, and the tokenizing error if any."""

    fields: tuple[Field, ...]
    file: str
    line_number: int
    raw_line: str
    error: str | None = None

    def config_error(self, message: str) -> ConfigError:
        return ConfigError(message, file=self.file, line=self.line_number)


class AuthFileError(ConfigError):
    """An auth file that cannot be loaded; ``errors`` lists every problem PostgreSQL would log.

    The message, file and line are those of the first problem.
    """

    def __init__(self, errors: list[ConfigError]) -> None:
        first = errors[0]
        self.errors = tuple(errors)
        super().__init__(first.message, file=first.file, line=first.line)


def compile_token(token: AuthToken, line: AuthLine, *, captures: bool = False) -> AuthToken:
    """Attach the regex of a ``/`` token (``regcomp_auth_token``: quoted or not).

    PostgreSQL's ARE, evaluated in linear time by RE2 (``regex.py``); ``captures`` when the
    caller will substitute group 1 (pg_ident.conf's ``\\1``). A pattern PostgreSQL rejects, or
    one pggate cannot evaluate with exactly PostgreSQL's meaning, is an error of the line.
    """
    if not token.string.startswith("/"):
        return token
    pattern = token.string[1:]
    try:
        regex = compile_regex(pattern, captures=captures)
    except RegexRefused as exc:
        raise line.config_error(f'invalid regular expression "{pattern}": {exc.reason}') from None
    return AuthToken(token.string, token.quoted, regex)


def regex_search(token: AuthToken, value: str) -> bool:
    """Unanchored match, as ``regexec_auth_token(value, token, 0, NULL)`` does."""
    assert token.regex is not None
    return token.regex.search(value)


def tokenize_auth_file(path: str, files: FileSource, *, warn: Warn) -> list[AuthLine]:
    """All logical lines of ``path`` with includes spliced in; raises only if ``path`` itself
    cannot be read (PostgreSQL: ``could not open file "%s": %m``)."""
    text = _open(path, files, START_DEPTH)
    out: list[AuthLine] = []
    _Tokenizer(files, warn).tokenize(path, text, START_DEPTH, out)
    return out


def parse_auth_file(
    path: str, files: FileSource, warn: Warn, parse: Callable[[AuthLine], T]
) -> list[T]:
    """Tokenize ``path`` and ``parse`` every line, PostgreSQL style: keep going after a bad
    line so every problem is reported, then refuse the whole file (``AuthFileError``)."""
    errors: list[ConfigError] = []
    parsed: list[T] = []
    for line in tokenize_auth_file(path, files, warn=warn):
        if line.error is not None:
            errors.append(line.config_error(line.error))
            continue
        try:
            parsed.append(parse(line))
        except ConfigError as exc:
            errors.append(exc)
    if errors:
        raise AuthFileError(errors)
    return parsed


def _open(path: str, files: FileSource, depth: int) -> str:
    """``open_auth_file``: the nesting check, then the read."""
    if depth > MAX_DEPTH:
        raise ConfigError(f'could not open file "{path}": maximum nesting depth exceeded')
    try:
        return files.read_text(path)
    except OSError as exc:
        raise _OpenError(f'could not open file "{path}": {os_error_text(exc)}', exc) from None


class _OpenError(ConfigError):
    """A failed read, remembering the OSError so include_if_exists can test for ENOENT."""

    def __init__(self, message: str, cause: OSError) -> None:
        super().__init__(message)
        self.cause = cause


def logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """(first line number, text) of each logical line, after backslash continuation.

    Mirrors ``tokenize_auth_file``: trailing CR/LF stripped, a final backslash joins the next
    physical line (only if it lies after the previous join point), and the C string ends at a
    NUL byte.
    """
    physical = text.split("\n")
    index = 0
    line_number = 1
    while index < len(physical):
        buf = ""
        last_join = 0
        continuations = 0
        while index < len(physical):
            buf = (buf + physical[index]).split("\0", 1)[0].rstrip("\r\n")
            index += 1
            if len(buf) > last_join and buf.endswith("\\"):
                buf = buf[:-1]
                last_join = len(buf)
                continuations += 1
                continue
            break
        yield line_number, buf
        line_number += continuations + 1


@dataclass(slots=True)
class _Token:
    text: str
    initial_quote: bool
    terminating_comma: bool


def next_token(line: str, pos: int) -> tuple[_Token | None, int]:
    """One token from ``line`` at ``pos`` (``hba.c:next_token``); None at end of line/comment.

    A terminating comma is reported, not consumed; leading blanks and commas are skipped.
    """
    end = len(line)
    while pos < end and (line[pos] in _BLANKS or line[pos] == ","):
        pos += 1
    buf: list[str] = []
    in_quote = was_quote = saw_quote = initial_quote = terminating_comma = False
    while pos < end and (in_quote or line[pos] not in _BLANKS):
        c = line[pos]
        if c == "#" and not in_quote:
            pos = end
            break
        if c == "," and not in_quote:
            terminating_comma = True
            break
        if c != '"' or was_quote:
            buf.append(c)
        # A literal double quote is written as two double quotes.
        was_quote = (not was_quote) if (in_quote and c == '"') else False
        if c == '"':
            in_quote = not in_quote
            saw_quote = True
            if not buf:
                initial_quote = True
        pos += 1
    if not saw_quote and not buf:
        return None, pos
    return _Token("".join(buf), initial_quote, terminating_comma), pos


class _Tokenizer:
    """Recursive tokenizer state: the file source and the warning sink."""

    def __init__(self, files: FileSource, warn: Warn) -> None:
        self.files = files
        self.warn = warn

    def tokenize(self, path: str, text: str, depth: int, out: list[AuthLine]) -> None:
        for line_number, raw in logical_lines(text):
            line = AuthLine((), path, line_number, raw)
            fields, error = self._fields(line, depth)
            if not fields and error is None:
                continue
            if error is None and len(fields) == 2:
                handled, error = self._directive(line, fields, depth, out)
                if handled and error is None:
                    continue
            out.append(AuthLine(tuple(fields), path, line_number, raw, error))

    def _fields(self, line: AuthLine, depth: int) -> tuple[list[Field], str | None]:
        fields: list[Field] = []
        pos = 0
        text = line.raw_line
        error: str | None = None
        while pos < len(text) and error is None:
            tokens: list[AuthToken] = []
            while True:
                token, pos = next_token(text, pos)
                if token is None:
                    break
                if not token.initial_quote and len(token.text) > 1 and token.text[0] == "@":
                    error = self._expand(line.file, token.text[1:], depth + 1, tokens)
                else:
                    tokens.append(AuthToken(token.text, token.initial_quote))
                if not token.terminating_comma or error is not None:
                    break
            if tokens:
                fields.append(tuple(tokens))
        return fields, error

    def _expand(self, outer: str, name: str, depth: int, tokens: list[AuthToken]) -> str | None:
        """``@file``: every token of every line of the file, flattened into this field."""
        path = absolute_location(name, outer)
        try:
            text = _open(path, self.files, depth)
        except ConfigError as exc:
            return exc.message
        lines: list[AuthLine] = []
        self.tokenize(path, text, depth, lines)
        for line in lines:
            if line.error is not None:
                return line.error
            for field in line.fields:
                tokens.extend(field)
        return None

    def _directive(
        self, line: AuthLine, fields: list[Field], depth: int, out: list[AuthLine]
    ) -> tuple[bool, str | None]:
        """``include`` / ``include_if_exists`` / ``include_dir``: (was a directive, error)."""
        keyword = fields[0][0].string
        target = fields[1][0].string
        if keyword == "include":
            path = absolute_location(target, line.file)
            return True, self._include(line, path, depth + 1, out, missing_ok=False)
        if keyword == "include_if_exists":
            path = absolute_location(target, line.file)
            return True, self._include(line, path, depth + 1, out, missing_ok=True)
        if keyword == "include_dir":
            return True, self._include_dir(line, target, depth + 1, out)
        return False, None

    def _include(
        self, line: AuthLine, path: str, depth: int, out: list[AuthLine], *, missing_ok: bool
    ) -> str | None:
        try:
            text = _open(path, self.files, depth)
        except _OpenError as exc:
            if missing_ok and isinstance(exc.cause, FileNotFoundError):
                message = f'skipping missing authentication file "{path}"'
                self.warn(str(line.config_error(message)))
                return None
            return exc.message
        except ConfigError as exc:
            return exc.message
        self.tokenize(path, text, depth, out)
        return None

    def _include_dir(
        self, line: AuthLine, name: str, depth: int, out: list[AuthLine]
    ) -> str | None:
        """``conffiles.c:GetConfFilesInDir``: ``*.conf`` not starting with ``.``, sorted."""
        if name.strip(" \t\r\n") == "":
            return f'empty configuration directory name: "{name}"'
        directory = absolute_location(name, line.file)
        try:
            entries = self.files.list_dir(directory)
        except OSError as exc:
            return f'could not open configuration directory "{directory}": {os_error_text(exc)}'
        paths = sorted(
            posixpath.normpath(posixpath.join(directory, entry))
            for entry in entries
            if len(entry) >= 6 and not entry.startswith(".") and entry.endswith(".conf")
        )
        errors = [
            error
            for path in paths
            if (error := self._include(line, path, depth, out, missing_ok=False)) is not None
        ]
        return "\n".join(errors) if errors else None

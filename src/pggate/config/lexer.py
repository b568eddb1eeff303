"""The postgresql.conf file syntax: tokens, statements and include directives.

Behaves like PostgreSQL's ``guc-file.l`` (the flex scanner and ``ParseConfigFp``) and
``conffiles.c`` (``include_dir``): the same token classes with flex's longest-match rule, the same
quirks (a value like ``a.b`` is a qualified identifier and therefore a syntax error unless quoted),
the same string escapes and the same error texts. Errors are collected, not raised, so that
``pggate check`` can list them all; after a syntax error the scanner resynchronises at the next
line, and gives up on a file after 100 of them, as PostgreSQL does.
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

from pggate.config.files import DiskFiles
from pggate.errors import ConfigError
from pggate.pgtext import FileSource, absolute_location, ascii_lower, os_error_text

# conffiles.h: CONF_FILE_MAX_DEPTH; the outermost file is depth 0.
MAX_INCLUDE_DEPTH = 10
# ParseConfigFp gives up on a file after this many syntax errors.
MAX_SYNTAX_ERRORS = 100


@dataclass(frozen=True, slots=True)
class ConfEntry:
    """One ``name = value`` line, with the place it came from (for error messages)."""

    name: str
    value: str
    file: str
    line: int


class ConfigSyntaxError(ConfigError):
    """A syntax error; PostgreSQL's text already names the file and line, so don't repeat them."""

    def __str__(self) -> str:
        return self.message


class Tok(enum.Enum):
    EOL = "end of line"
    EOF = "end of file"
    SPACE = "whitespace"
    COMMENT = "comment"
    ID = "identifier"
    QUALIFIED_ID = "qualified identifier"
    STRING = "quoted string"
    UNQUOTED_STRING = "unquoted string"
    INTEGER = "integer"
    REAL = "real"
    EQUALS = "="
    ERROR = "unexpected character"


# guc-file.l's definitions; bytes \200-\377 are letters there, so every non-ASCII character is
# one here (text is decoded with surrogateescape, which maps stray bytes to \udc80-\udcff).
_LETTER = "[A-Za-z_\x80-\U0010ffff]"
_LETTER_OR_DIGIT = "[A-Za-z_0-9\x80-\U0010ffff]"
_ID = f"{_LETTER}{_LETTER_OR_DIGIT}*"

# In flex order: on equal lengths the earlier rule wins. INTEGER is split in two so that the
# longest-match choice between its hex and decimal forms is made like flex makes it.
_RULES: tuple[tuple[Tok, re.Pattern[str]], ...] = tuple(
    (tok, re.compile(pattern))
    for tok, pattern in (
        (Tok.EOL, r"\n"),
        (Tok.SPACE, r"[ \t\r]+"),
        (Tok.COMMENT, r"#[^\n]*"),
        (Tok.ID, _ID),
        (Tok.QUALIFIED_ID, rf"{_ID}\.{_ID}"),
        (Tok.STRING, r"'(?:[^'\\\n]|\\[^\n]|'')*'"),
        (Tok.UNQUOTED_STRING, rf"{_LETTER}(?:{_LETTER_OR_DIGIT}|[-._:/])*"),
        (Tok.INTEGER, r"[-+]?0x[0-9a-fA-F]+[a-zA-Z]*"),
        (Tok.INTEGER, r"[-+]?[0-9]+[a-zA-Z]*"),
        (Tok.REAL, r"[-+]?[0-9]*\.[0-9]*(?:[Ee][-+]?[0-9]+)?"),
        (Tok.EQUALS, r"="),
        (Tok.ERROR, r"[^\n]"),
    )
)

_NAME_TOKENS = frozenset({Tok.ID, Tok.QUALIFIED_ID})
_VALUE_TOKENS = frozenset({Tok.ID, Tok.STRING, Tok.INTEGER, Tok.REAL, Tok.UNQUOTED_STRING})
_BARE_VALUE_TOKENS = _VALUE_TOKENS - {Tok.STRING}
_LINE_ENDS = frozenset({Tok.EOL, Tok.EOF})


@dataclass(frozen=True, slots=True)
class _Token:
    kind: Tok
    text: str
    line: int


def _match(text: str, pos: int) -> tuple[Tok, int]:
    """The longest token at ``pos`` (earliest rule on ties), as flex picks it."""
    best, end = Tok.ERROR, pos
    for tok, pattern in _RULES:
        m = pattern.match(text, pos)
        if m is not None and m.end() > end:
            best, end = tok, m.end()
    return best, end


def _tokens(text: str) -> Iterator[_Token]:
    """Tokens without whitespace and comments, then EOF forever (so lookahead never fails)."""
    pos, line = 0, 1
    while pos < len(text):
        kind, end = _match(text, pos)
        if kind is Tok.EOL:
            yield _Token(kind, "\n", line)
            line += 1
        elif kind not in (Tok.SPACE, Tok.COMMENT):
            yield _Token(kind, text[pos:end], line)
        pos = end
    while True:
        yield _Token(Tok.EOF, "", line)


_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_OCTAL = re.compile("[0-7]{1,3}")


def unquote(token: str) -> str:
    """The value of a quoted-string token (guc-file.l's DeescapeQuotedString).

    ``''`` is a quote; backslash escapes \\b \\f \\n \\r \\t and up to three octal digits, and
    otherwise stands for the next character. The C string ends at a NUL, so the value does too.
    """
    inner, out, i = token[1:-1], [], 0
    while i < len(inner):
        c = inner[i]
        if c == "\\":
            i += 1  # the STRING pattern guarantees a character after the backslash
            octal = _OCTAL.match(inner, i)
            if octal is not None:
                out.append(chr(int(octal.group(), 8) & 0xFF))
                i = octal.end()
                continue
            out.append(_ESCAPES.get(inner[i], inner[i]))
        elif c == "'":
            i += 1  # a doubled quote: the pattern admits no lone quote inside
            out.append("'")
        else:
            out.append(c)
        i += 1
    return "".join(out).split("\0", 1)[0]


_QUOTE_ESCAPES = {"\\": "\\\\", "'": "''", **{v: "\\" + k for k, v in _ESCAPES.items()}}


def quote(value: str) -> str:
    """``value`` as a token that unquote() (and PostgreSQL) reads back unchanged."""
    return "'" + "".join(_QUOTE_ESCAPES.get(c, c) for c in value) + "'"


def is_bare_value(value: str) -> bool:
    """Whether ``value`` can be written unquoted (it is exactly one unquoted value token)."""
    if not value:
        return False
    kind, end = _match(value, 0)
    return end == len(value) and kind in _BARE_VALUE_TOKENS


def _absolute(path: str, calling_file: str | None) -> str:
    """AbsoluteConfigLocation; the top file (no caller) is made absolute from the cwd."""
    if calling_file is not None:
        path = absolute_location(path, calling_file)
    return os.path.normpath(os.path.abspath(path))


class _Reader:
    """One parse of a file tree: the entries found and the errors met, in file order."""

    def __init__(self, files: FileSource) -> None:
        self.files = files
        self.entries: list[ConfEntry] = []
        self.errors: list[ConfigError] = []

    def _error(self, message: str, file: str | None, line: int | None) -> None:
        self.errors.append(ConfigError(message, file=file, line=line))

    def file(
        self,
        config_file: str,
        calling_file: str | None,
        calling_line: int | None,
        depth: int,
        *,
        strict: bool = True,
        in_dir: bool = False,
    ) -> None:
        """ParseConfigFile: checks, then read and parse one file."""
        if not config_file.strip(" \t\r\n"):
            self._error(
                f'empty configuration file name: "{config_file}"', calling_file, calling_line
            )
            return
        if depth > MAX_INCLUDE_DEPTH:
            self._error(
                f'could not open configuration file "{config_file}": '
                "maximum nesting depth exceeded",
                calling_file,
                calling_line,
            )
            return
        path = _absolute(config_file, calling_file)
        if path == calling_file:
            # Only direct recursion is caught here; indirect loops hit the depth limit.
            self._error(
                f'configuration file recursion in "{calling_file}"', calling_file, calling_line
            )
            return
        try:
            text = self.files.read_text(path)
        except IsADirectoryError:
            if in_dir:
                return  # include_dir skips subdirectories, even ones named *.conf
            self._error(
                f'could not open configuration file "{path}": Is a directory',
                calling_file,
                calling_line,
            )
            return
        except FileNotFoundError as exc:
            if strict:
                self._error(
                    f'could not open configuration file "{path}": {os_error_text(exc)}',
                    calling_file,
                    calling_line,
                )
            # include_if_exists: PostgreSQL only logs "skipping missing configuration file".
            return
        except (OSError, ValueError) as exc:
            # Unreadable is an error even for include_if_exists: it exists.
            self._error(
                f'could not open configuration file "{path}": {os_error_text(exc)}',
                calling_file,
                calling_line,
            )
            return
        self.text(text, path, depth)

    def directory(
        self, include_dir: str, calling_file: str | None, calling_line: int | None, depth: int
    ) -> None:
        """ParseConfigDirectory / GetConfFilesInDir: every ``*.conf`` in byte order."""
        if not include_dir.strip(" \t\r\n"):
            self._error(
                f'empty configuration directory name: "{include_dir}"',
                calling_file,
                calling_line,
            )
            return
        path = _absolute(include_dir, calling_file)
        try:
            names = self.files.list_dir(path)
        except (OSError, ValueError) as exc:
            self._error(
                f'could not open configuration directory "{path}": {os_error_text(exc)}',
                calling_file,
                calling_line,
            )
            return
        # Skip ".", "..", hidden files, backups and editor debris: only "X.conf", X non-empty.
        wanted = [n for n in names if len(n) > 5 and not n.startswith(".") and n.endswith(".conf")]
        wanted.sort(key=lambda n: n.encode("utf-8", "surrogatepass"))
        for name in wanted:
            self.file(os.path.join(path, name), calling_file, calling_line, depth, in_dir=True)

    def text(self, text: str, file: str, depth: int) -> None:
        """ParseConfigFp: one statement per line; resynchronise at the next line on errors."""
        tokens = _tokens(text)
        syntax_errors = 0
        for first in tokens:
            if first.kind is Tok.EOF:
                return
            if first.kind is Tok.EOL:
                continue
            bad = self._statement(first, tokens, file, depth)
            if bad is None:
                continue
            self.errors.append(_syntax_error(file, bad))
            syntax_errors += 1
            if syntax_errors >= MAX_SYNTAX_ERRORS:
                self._error(f'too many syntax errors found, abandoning file "{file}"', None, None)
                return
            while bad.kind not in _LINE_ENDS:
                bad = next(tokens)
            if bad.kind is Tok.EOF:
                return

    def _statement(
        self, first: _Token, tokens: Iterator[_Token], file: str, depth: int
    ) -> _Token | None:
        """Parse ``name [=] value`` up to the line end; return the offending token on error."""
        if first.kind not in _NAME_TOKENS:
            return first
        token = next(tokens)
        if token.kind is Tok.EQUALS:
            token = next(tokens)
        if token.kind not in _VALUE_TOKENS:
            return token
        value = unquote(token.text) if token.kind is Tok.STRING else token.text
        end = next(tokens)
        if end.kind not in _LINE_ENDS:
            return end
        self._apply(first.text, value, file, first.line, depth)
        return None

    def _apply(self, name: str, value: str, file: str, line: int, depth: int) -> None:
        directive = ascii_lower(name)
        if directive == "include_dir":
            self.directory(value, file, line, depth + 1)
        elif directive == "include_if_exists":
            self.file(value, file, line, depth + 1, strict=False)
        elif directive == "include":
            self.file(value, file, line, depth + 1)
        else:
            self.entries.append(ConfEntry(name, value, file, line))


def _syntax_error(file: str, token: _Token) -> ConfigSyntaxError:
    if token.kind in _LINE_ENDS:
        # PostgreSQL prints ConfigFileLineno - 1 here, which is one line too early when the
        # file ends without a newline; we name the line the statement is on.
        message = f'syntax error in file "{file}" line {token.line}, near end of line'
    else:
        message = f'syntax error in file "{file}" line {token.line}, near token "{token.text}"'
    return ConfigSyntaxError(message, file=file, line=token.line)


def read_config(
    path: str, files: FileSource | None = None
) -> tuple[list[ConfEntry], list[ConfigError]]:
    """Every entry of ``path`` and its includes, in order (later wins), and every error met."""
    reader = _Reader(files or DiskFiles())
    reader.file(path, None, None, 0)
    return reader.entries, reader.errors


def parse_text(
    text: str, file: str, files: FileSource | None = None
) -> tuple[list[ConfEntry], list[ConfigError]]:
    """Like read_config() for text already in hand; ``file`` names it and anchors includes."""
    reader = _Reader(files or DiskFiles())
    reader.text(text, _absolute(file, None), 0)
    return reader.entries, reader.errors


def parse_config(path: str, files: FileSource | None = None) -> list[ConfEntry]:
    """read_config(), raising the first error."""
    entries, errors = read_config(path, files)
    if errors:
        raise errors[0]
    return entries

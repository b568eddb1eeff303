"""libpq's conninfo parser: ``key=value`` strings and ``postgresql://`` URIs.

``parse_conninfo`` is ``PQconninfoParse`` (fe-connect.c ``parse_connection_string``): the
keywords written in the string and their values, nothing defaulted, a later keyword replacing
an earlier one. The differential tests hold it to the installed libpq's own parser.

Secrets: libpq quotes the offending text in some of its messages (the whole URI, a raw
percent-encoded value, the word before a missing ``=``), which can be a password. pggate keeps
libpq's wording but quotes nothing from a URI beyond a query keyword (and the one character its
"unexpected character" names), and no word that could be part of a secret: one not shaped like
a keyword, or one that may be a secret's tail (after a secret written without quotes, or
followed by more text without a space; after a secret in a URI query; anywhere in a URI whose
first "@" comes after its first "/", the mark of an unencoded "/" in a password). DETAIL says
what was left out. ``parse_marked`` also names the keywords whose values may hold such a tail
(and a URI's port, where that "/" puts part of the password), so that validation errors leave
those values out too.

Deviations, both refusals: a NUL character (libpq would stop reading there) and a percent-decoded
value that is not UTF-8 (pggate's configuration is text).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pggate.conninfo.keywords import KNOWN, REQUIRESSL, SECRET_KEYWORDS
from pggate.errors import ConfigError

URI_PREFIXES = ("postgresql://", "postgres://")  # uri_designator, short_uri_designator
_SPACE = frozenset(" \t\n\v\f\r")  # isspace() in the C locale
_HEX = frozenset("0123456789abcdefABCDEF")  # get_hexdigit
_KEYWORD_SHAPE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
NOT_SHOWN = "It is not shown, as it may be part of a secret."


def refuse(message: str, *, detail: str | None = None, hint: str | None = None) -> ConfigError:
    """A ConfigError about the ``backend`` setting."""
    return ConfigError(message, parameter="backend", detail=detail, hint=hint)


def _shown(word: str, *, after_secret: bool = False) -> str | None:
    """``word`` if it may appear in an error: keyword-shaped and not a secret's possible tail."""
    if word == "" or (not after_secret and _KEYWORD_SHAPE.fullmatch(word)):
        return word
    return None


def _about(message: str, word: str, *, after_secret: bool = False) -> ConfigError:
    """``message`` and the quoted ``word``, or ``message`` and a DETAIL saying it is left out."""
    shown = _shown(word, after_secret=after_secret)
    if shown is None:
        return refuse(message.rstrip(":"), detail=NOT_SHOWN)
    return refuse(f'{message} "{shown}"')


@dataclass(frozen=True, slots=True)
class Parsed:
    """The keywords and values written in a conninfo string, and the keywords whose values an
    error must not quote: written right after a secret, where the secret may run on (an
    unquoted space, an unencoded ``&``), or a URI's port, where an unencoded ``/`` in the
    password puts part of it."""

    values: dict[str, str]
    hidden: frozenset[str] = frozenset()


class _Options:
    """conninfo_storeval's target: the values, and which of them may hold part of a secret."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.hidden: set[str] = set()

    def store(self, keyword: str, value: str, *, in_uri: bool, after_secret: bool) -> str:
        """conninfo_storeval: the ``requiressl`` alias, then refuse an unknown keyword."""
        if keyword == REQUIRESSL:
            keyword, value = "sslmode", "require" if value.startswith("1") else "prefer"
        if keyword not in KNOWN:
            if in_uri:
                raise _about("invalid URI query parameter:", keyword, after_secret=after_secret)
            raise _about("invalid connection option", keyword, after_secret=after_secret)
        self.values[keyword] = value
        if after_secret:
            self.hidden.add(keyword)
        return keyword

    def store_decoded(self, keyword: str, raw: str, where: str) -> None:
        """A part of the URI before its query: stored percent-decoded when not empty."""
        if raw:
            self.values[keyword] = _uri_decode(raw, where)

    def parsed(self) -> Parsed:
        return Parsed(self.values, frozenset(self.hidden))


def parse_conninfo(text: str) -> dict[str, str]:
    """libpq's PQconninfoParse: the keyword → value pairs written in ``text`` (either form)."""
    return parse_marked(text).values


def parse_marked(text: str) -> Parsed:
    """parse_conninfo, and which values an error must not quote."""
    if "\0" in text:
        raise refuse("connection info string contains a NUL character")
    try:
        text.encode()
    except UnicodeEncodeError:
        raise refuse("connection info string is not valid UTF-8") from None
    if text.startswith(URI_PREFIXES):
        return _parse_uri(text)
    return _parse_keyword_value(text)


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _SPACE:
        pos += 1
    return pos


def _parse_keyword_value(text: str) -> Parsed:
    """conninfo_parse: whitespace-separated ``keyword = value``; a value may be in single quotes,
    and a backslash takes the next character literally, quoted or not."""
    options = _Options()
    pos, end = 0, len(text)
    after_secret = False  # the previous value was a secret that may run on into this word
    while True:
        pos = _skip_space(text, pos)
        if pos >= end:
            return options.parsed()
        start = pos
        while pos < end and text[pos] != "=" and text[pos] not in _SPACE:
            pos += 1
        name = text[start:pos]
        pos = _skip_space(text, pos)
        if pos >= end or text[pos] != "=":
            raise _missing_equals(name, after_secret=after_secret)
        pos = _skip_space(text, pos + 1)
        chars: list[str] = []
        quoted = pos < end and text[pos] == "'"
        if quoted:
            pos += 1
            while True:
                if pos >= end:
                    raise refuse("unterminated quoted string in connection info string")
                char = text[pos]
                pos += 1
                if char == "'":
                    break
                if char == "\\":
                    if pos < end:
                        chars.append(text[pos])
                        pos += 1
                    continue
                chars.append(char)
        else:
            while pos < end:
                char = text[pos]
                pos += 1
                if char in _SPACE:
                    break
                if char == "\\":
                    if pos < end:
                        chars.append(text[pos])
                        pos += 1
                    continue
                chars.append(char)
        keyword = options.store(name, "".join(chars), in_uri=False, after_secret=after_secret)
        # A secret runs on unquoted up to a space, or quoted text is followed by more without one.
        attached = quoted and pos < end and text[pos] not in _SPACE
        after_secret = keyword in SECRET_KEYWORDS and (not quoted or attached)


def _missing_equals(word: str, *, after_secret: bool) -> ConfigError:
    shown = _shown(word, after_secret=after_secret)
    if shown is None:
        return refuse(
            'missing "=" in connection info string',
            detail="The word before it is not shown, as it may be part of a secret.",
            hint="Write a value that contains spaces in single quotes.",
        )
    return refuse(f'missing "=" after "{shown}" in connection info string')


def _uri_decode(raw: str, where: str) -> str:
    """conninfo_uri_decode: ``%XX`` only (a ``+`` stays a ``+``); spaces may only surround the
    value; ``%00`` is forbidden."""
    end = len(raw)
    pos = 0
    while pos < end and raw[pos] == " ":
        pos += 1
    out = bytearray()
    while pos < end and raw[pos] != " ":
        char = raw[pos]
        if char != "%":
            out += char.encode()
            pos += 1
            continue
        digits = raw[pos + 1 : pos + 3]
        if len(digits) != 2 or not set(digits) <= _HEX:
            raise refuse(f"invalid percent-encoded token in {where}", detail=NOT_SHOWN)
        byte = int(digits, 16)
        if byte == 0:
            raise refuse(f"forbidden value %00 in percent-encoded value in {where}")
        out.append(byte)
        pos += 3
    while pos < end and raw[pos] == " ":
        pos += 1
    if pos < end:
        raise refuse(
            f"unexpected spaces found in {where}, use percent-encoded spaces (%20) instead"
        )
    # Bytes that are not UTF-8 are kept (as surrogates) until the whole URI is parsed, so that
    # any error of libpq's comes first; _parse_uri then refuses them.
    return out.decode(errors="surrogateescape")


def _parse_uri(text: str) -> Parsed:
    """conninfo_uri_parse_options:
    ``postgresql://[user[:password]@][host][:port][,...][/dbname][?keyword=value&...]``."""
    options = _Options()
    end = len(text)
    pos = len(next(prefix for prefix in URI_PREFIXES if text.startswith(prefix)))
    at = pos
    while at < end and text[at] not in "@/":
        at += 1
    # No userinfo, but an "@" further on: an unencoded "/" in a password may have ended the
    # authority early, and the password's tail may be anywhere in what follows.
    garbled = "@" in text[at:] and text[at : at + 1] != "@"
    if at < end and text[at] == "@":
        user, colon, password = text[pos:at].partition(":")
        options.store_decoded("user", user, "the user name of the URI")
        if colon:
            options.store_decoded("password", password, "the password of the URI")
        pos = at + 1
    hosts: list[str] = []
    ports: list[str] = []
    while True:
        if pos < end and text[pos] == "[":
            close = text.find("]", pos + 1)
            if close < 0:
                raise refuse(
                    'end of string reached when looking for matching "]" in IPv6 host address'
                    " in URI"
                )
            if close == pos + 1:
                raise refuse("IPv6 host address may not be empty in URI")
            hosts.append(text[pos + 1 : close])
            pos = close + 1
            if pos < end and text[pos] not in ":/?,":
                position = len(text[:pos].encode()) + 1
                raise refuse(
                    f'unexpected character "{text[pos]}" at position {position} in URI'
                    ' (expected ":" or "/")'
                )
        else:
            start = pos
            while pos < end and text[pos] not in ":/?,":
                pos += 1
            hosts.append(text[start:pos])
        port = ""
        if pos < end and text[pos] == ":":
            start = pos = pos + 1
            while pos < end and text[pos] not in "/?,":
                pos += 1
            port = text[start:pos]
        ports.append(port)
        if pos >= end or text[pos] != ",":
            break
        pos += 1
    options.store_decoded("host", ",".join(hosts), "the host of the URI")
    options.store_decoded("port", ",".join(ports), "the port of the URI")
    options.hidden.add("port")  # an unencoded "/" in the password ends the userinfo early
    if pos < end and text[pos] == "/":
        start = pos = pos + 1
        while pos < end and text[pos] != "?":
            pos += 1
        options.store_decoded("dbname", text[start:pos], "the database name of the URI")
    if pos < end:  # at "?"
        _parse_query(text[pos + 1 :], options, garbled=garbled)
    for keyword, value in options.values.items():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise refuse(f'percent-decoded value of "{keyword}" is not valid UTF-8') from None
    return options.parsed()


def _parse_query(params: str, options: _Options, *, garbled: bool) -> None:
    """conninfo_uri_parse_params: ``keyword=value`` pairs separated by ``&``."""
    after_secret = garbled
    pieces = params.split("&")
    if pieces[-1] == "":
        pieces.pop()  # libpq stops at the end of the string, after a last "&" too
    for param in pieces:
        keyword_raw, equals, value_raw = param.partition("=")
        if not equals:
            raise _about(
                'missing key/value separator "=" in URI query parameter:',
                param,
                after_secret=after_secret,
            )
        if "=" in value_raw:
            raise _about(
                'extra key/value separator "=" in URI query parameter:',
                keyword_raw,
                after_secret=after_secret,
            )
        keyword = _uri_decode(keyword_raw, "the name of a URI query parameter")
        shown = _shown(keyword, after_secret=after_secret)
        where = "a URI query parameter" if shown is None else f'URI query parameter "{shown}"'
        value = _uri_decode(value_raw, where)
        if keyword == "ssl" and value == "true":
            keyword, value = "sslmode", "require"
        stored = options.store(keyword, value, in_uri=True, after_secret=after_secret)
        after_secret = garbled or stored in SECRET_KEYWORDS

"""The commented pggate.conf that ``pggate init`` writes.

Laid out like PostgreSQL's postgresql.conf.sample: sections, each setting with its help line,
defaults commented out; settings given to init (and different from the default) are active.
"""

from __future__ import annotations

import textwrap

from pggate.config.lexer import is_bare_value, quote
from pggate.config.settings import (
    GROUPS,
    SETTINGS,
    Setting,
    default_value,
    lookup,
    parse_value,
)

_HEADER = """\
# pggate configuration file
# -------------------------
#
# The syntax is PostgreSQL's postgresql.conf syntax and the names are PostgreSQL's own:
#
#   name = value
#
# one per line ("=" is optional); "#" starts a comment; strings go in single quotes; numbers may
# carry a unit (ms, s, min, h, d; kB, MB, GB); booleans are on/off, true/false, yes/no, 1/0.
# "include 'file'", "include_if_exists 'file'" and "include_dir 'directory'" read other files.
#
# Commented-out settings show the defaults. Relative paths are relative to this directory.
# Settings marked "(change requires restart)" take effect at the next start; all others on
# reload (SIGHUP, "pggate reload"). "pggate serve -c name=value" overrides this file.
"""

_RULE = "#" + "-" * 78


def _literal(setting: Setting, text: str) -> str:
    """The value as written in the file: bare where PostgreSQL's sample writes it bare."""
    if setting.kind in ("bool", "int", "real") and is_bare_value(text):
        return text
    return quote(text)


def _entry(setting: Setting, text: str, active: bool) -> list[str]:
    lines = [f"# {line}" for line in textwrap.wrap(setting.help, 96)]
    line = f"{'' if active else '#'}{setting.name} = {_literal(setting, text)}"
    if setting.context == "postmaster":
        line += "\t\t# (change requires restart)"
    return [*lines, line]


def render_default_conf(**overrides: str) -> str:
    """A complete, commented pggate.conf; ``overrides`` (name=value text, as after ``-c``) that
    differ from the defaults are written as active lines. Bad names or values raise
    SettingError."""
    active: dict[str, str] = {}
    for name, text in overrides.items():
        setting = lookup(name)
        if parse_value(setting, text) != default_value(setting):
            active[setting.name] = text
    parts = [_HEADER.rstrip("\n")]
    for group in GROUPS:
        parts += ["", _RULE, f"# {group.upper()}", _RULE]
        for setting in (s for s in SETTINGS if s.group == group):
            parts.append("")
            text = active.get(setting.name, setting.default)
            parts += _entry(setting, text, setting.name in active)
    return "\n".join(parts) + "\n"

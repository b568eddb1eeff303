"""From a gateway directory to a validated Config, and what a SIGHUP may change.

PostgreSQL's order of business (ProcessConfigFileInternal): read the file tree, reject unknown
names, let the last occurrence of each parameter win, validate the values; command-line ``-c``
options take precedence over the file. Nothing is applied unless everything is valid.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pggate import gss_support
from pggate.config.files import FileSource
from pggate.config.lexer import ConfEntry, read_config
from pggate.config.model import Config
from pggate.config.settings import (
    SETTINGS,
    Setting,
    SettingError,
    Value,
    default_value,
    lookup,
    parse_value,
)
from pggate.directory import layout
from pggate.errors import ConfigError
from pggate.hop.route import checked_target
from pggate.logsink.zones import ZoneRefused, find_zone

CONFIG_FILE_NAME = layout.CONF_FILE


def _check_backend(value: Value) -> None:
    """The backend conninfo is validated where it is written (a GUC check hook's place), so
    its error names file and line; the message never quotes the value (it may hold a password).
    """
    if not value:
        return  # the embedded cluster
    try:
        checked_target(str(value))
    except ConfigError as exc:
        raise SettingError(
            f'invalid value for parameter "backend": {exc.message}',
            parameter="backend",
            detail=exc.detail,
            hint=exc.hint,
        ) from None


def _check_krb_server_keyfile(value: Value) -> None:
    """A keytab turns GSSAPI on, and GSSAPI is the optional extra pggate[gss] (gss_support)."""
    if value and not gss_support.available():
        raise SettingError(
            gss_support.KEYFILE_MESSAGE,
            parameter="krb_server_keyfile",
            detail=gss_support.missing_detail(),
            hint=gss_support.HINT,
        )


def _check_backend_krb_client_keyfile(value: Value) -> None:
    """A client keytab is for pggate as a GSSAPI client, which needs pggate[gss] too."""
    if value and not gss_support.available():
        raise SettingError(
            'parameter "backend_krb_client_keyfile" requires GSSAPI support, '
            "which is not installed",
            parameter="backend_krb_client_keyfile",
            detail=gss_support.missing_detail(),
            hint=gss_support.HINT,
        )


def _check_log_timezone(value: Value) -> None:
    """check_log_timezone: a zone of the time zone database (logsink/zones.py)."""
    try:
        find_zone(str(value))
    except ZoneRefused as exc:
        raise SettingError(
            exc.message or f'invalid value for parameter "log_timezone": "{value}"',
            parameter="log_timezone",
            detail=exc.detail,
        ) from None


# PostgreSQL's check hooks: validation beyond a value's type, run wherever a value is set.
_CHECK_HOOKS: dict[str, Callable[[Value], None]] = {
    "backend": _check_backend,
    "backend_krb_client_keyfile": _check_backend_krb_client_keyfile,
    "krb_server_keyfile": _check_krb_server_keyfile,
    "log_timezone": _check_log_timezone,
}


def _parse_checked(setting: Setting, text: str) -> Value:
    value = parse_value(setting, text)
    hook = _CHECK_HOOKS.get(setting.name)
    if hook is not None:
        hook(value)
    return value


def _winners(entries: list[ConfEntry], errors: list[ConfigError]) -> dict[Setting, ConfEntry]:
    """The last entry of each known parameter; unknown names become errors."""
    winners: dict[Setting, ConfEntry] = {}
    for entry in entries:
        try:
            setting = lookup(entry.name)
        except SettingError as exc:
            errors.append(exc.at(entry.file, entry.line))
            continue
        winners.pop(setting, None)  # keep file order for the error list below
        winners[setting] = entry
    return winners


def _evaluate(
    directory: Path | str, overrides: Mapping[str, str], files: FileSource | None
) -> tuple[Config | None, list[ConfigError]]:
    root = Path(os.path.abspath(directory))
    entries, errors = read_config(str(root / CONFIG_FILE_NAME), files)
    values: dict[str, Any] = {s.name: default_value(s) for s in SETTINGS}
    explicitly_set: set[str] = set()
    for setting, entry in _winners(entries, errors).items():
        try:
            values[setting.name] = _parse_checked(setting, entry.value)
            explicitly_set.add(setting.name)
        except SettingError as exc:
            errors.append(exc.at(entry.file, entry.line))
    for name, value in overrides.items():
        # postgres -c turns dashes into underscores (ParseLongOption); so do we.
        where = f' (command-line option "-c {name}={value}")'
        try:
            setting = lookup(name.replace("-", "_"))
            values[setting.name] = _parse_checked(setting, value)
            explicitly_set.add(setting.name)
        except SettingError as exc:
            errors.append(exc.at(None, None, suffix=where))
    if errors:
        return None, errors
    return Config(directory=root, explicitly_set=frozenset(explicitly_set), **values), []


def load(
    directory: Path | str,
    overrides: Mapping[str, str] | None = None,
    files: FileSource | None = None,
) -> Config:
    """The configuration of ``directory`` (its pggate.conf, then ``-c`` overrides).

    Raises the first ConfigError; check() lists them all.
    """
    config, errors = _evaluate(directory, overrides or {}, files)
    if config is None:
        raise errors[0]
    return config


def check(
    directory: Path | str,
    overrides: Mapping[str, str] | None = None,
    files: FileSource | None = None,
) -> list[ConfigError]:
    """Every problem with the configuration of ``directory``; [] if none.

    In PostgreSQL's order of checking: file and syntax errors, unknown names, bad values, then
    the ``-c`` overrides.
    """
    return _evaluate(directory, overrides or {}, files)[1]


def reload_diff(old: Config, new: Config) -> tuple[Config, list[str]]:
    """The configuration a SIGHUP puts in force, and the log lines it owes.

    Reloadable (sighup) parameters take their new values; restart-only (postmaster) ones keep
    their old values, with PostgreSQL's message for each that was changed in the file.
    """
    kept: dict[str, Any] = {}
    messages: list[str] = []
    for setting in SETTINGS:
        if setting.context != "postmaster":
            continue
        before = getattr(old, setting.name)
        if getattr(new, setting.name) != before:
            kept[setting.name] = before
            messages.append(
                f'parameter "{setting.name}" cannot be changed without restarting the server'
            )
    return dataclasses.replace(new, **kept), messages

"""pggate.conf: PostgreSQL's configuration syntax and parameter names for the gateway.

``load(DIR)`` reads ``DIR/pggate.conf`` (with its includes) and returns a frozen Config;
``check`` lists every problem; ``reload_diff`` decides what a SIGHUP may change;
``render_default_conf`` writes the commented file for ``pggate init``.
"""

from __future__ import annotations

from pggate.config.files import DiskFiles, FileSource
from pggate.config.lexer import ConfEntry, ConfigSyntaxError, parse_config, read_config
from pggate.config.load import CONFIG_FILE_NAME, check, load, reload_diff
from pggate.config.model import Config
from pggate.config.render import render_default_conf
from pggate.config.settings import SETTINGS, Setting, SettingError, lookup, parse_bool

__all__ = [
    "CONFIG_FILE_NAME",
    "SETTINGS",
    "ConfEntry",
    "Config",
    "ConfigSyntaxError",
    "DiskFiles",
    "FileSource",
    "Setting",
    "SettingError",
    "check",
    "load",
    "lookup",
    "parse_bool",
    "parse_config",
    "read_config",
    "reload_diff",
    "render_default_conf",
]

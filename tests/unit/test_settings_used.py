"""Fail closed: every setting pggate accepts is read by the code that gives it its effect.

A setting in the table that no module outside ``config/`` reads would be accepted and ignored,
which is how ``log_hostname``, ``scram_iterations`` and ``trace_connection_negotiation`` once
slipped through. This walks the settings table and the source: each setting must be read as an
attribute (``cfg.NAME``) somewhere outside the configuration package itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pggate
from pggate.config.settings import SETTINGS

SOURCE = Path(pggate.__file__).parent
CONFIG_PACKAGE = SOURCE / "config"


def _attributes_read_outside_config() -> set[str]:
    names: set[str] = set()
    for path in SOURCE.rglob("*.py"):
        if CONFIG_PACKAGE in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
                names.add(node.attr)
    return names


def test_every_setting_is_read_by_some_code() -> None:
    read = _attributes_read_outside_config()
    unread = [setting.name for setting in SETTINGS if setting.name not in read]
    assert unread == [], f"settings accepted but read by no code: {unread}"


def test_the_walk_would_notice_an_unread_setting() -> None:
    """The check can fail: a name no code uses is reported."""
    assert "no_such_setting_anywhere" not in _attributes_read_outside_config()

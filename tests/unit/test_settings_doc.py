"""docs/settings.md is the settings table rendered (pggate.config.reference), never stale."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from pggate.config import reference
from pggate.config.settings import GROUPS, SETTINGS

SETTINGS_DOC = Path(__file__).resolve().parents[2] / "docs" / "settings.md"


def test_settings_doc_is_up_to_date() -> None:
    expected = reference.settings_reference()
    actual = SETTINGS_DOC.read_text(encoding="utf-8") if SETTINGS_DOC.exists() else ""
    if actual != expected:
        diff = "".join(
            difflib.unified_diff(
                actual.splitlines(keepends=True),
                expected.splitlines(keepends=True),
                "docs/settings.md",
                "generated",
                n=1,
            )
        )
        pytest.fail(
            "docs/settings.md differs from the settings table: run tools/settings-doc\n"
            + diff[:4000]
        )


def test_every_setting_has_a_section_in_its_group() -> None:
    text = reference.settings_reference()
    group_at = {group: text.index(f"\n## {group}\n") for group in GROUPS}
    for setting in SETTINGS:
        section = text.index(f"\n### `{setting.name}`\n")
        later_groups = [at for at in group_at.values() if at > group_at[setting.group]]
        assert group_at[setting.group] < section < min(later_groups, default=len(text))


def test_help_markup_is_escaped() -> None:
    assert reference._text("'*' for all, _pq_.x, a_b") == r"'\*' for all, \_pq\_.x, a_b"

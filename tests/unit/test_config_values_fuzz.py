"""config/settings.py's value parsers under hypothesis (guc.c's parse_bool, parse_int,
parse_real, enum and list rules): any text for any setting is its value or a SettingError,
and a value is always one the setting allows.
"""

from __future__ import annotations

import math

from hypothesis import event, given
from hypothesis import strategies as st

from pggate.config.settings import (
    INT_MAX,
    INT_MIN,
    SETTINGS,
    Setting,
    SettingError,
    lookup,
    parse_bool,
    parse_value,
)

NUMERIC = st.one_of(
    st.integers(-(10**25), 10**25).map(str),
    st.text("0123456789", min_size=1, max_size=6000),  # past int()'s 4300-digit limit too
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.builds(
        "{}{}{}".format,
        st.sampled_from(["", " ", "-", "+", "0x", "0", "\t"]),
        st.text("0123456789abcdefABCDEF.eE+-", max_size=12),
        st.sampled_from(
            ["", "s", "ms", "min", "h", "d", "us", "kB", "MB", "GB", "TB", "B", " s", "x"]
        ),
    ),
)
WORDISH = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["on", "off", "of", "o", "t", "TRUE", "yes", "n", "1", "0", "all", "none"]),
    st.lists(
        st.sampled_from(
            ["receipt", "authentication", "all", "on", '"x"', ",", " ", "setup_durations"]
        ),
        max_size=5,
    ).map("".join),
)


@given(st.sampled_from(SETTINGS), st.one_of(NUMERIC, WORDISH))
def test_any_text_is_a_value_of_the_setting_or_a_setting_error(setting: Setting, text: str) -> None:
    try:
        value = parse_value(setting, text)
    except SettingError as exc:
        event(f"{setting.kind}: refused")
        assert exc.parameter == setting.name and exc.message
        return
    event(f"{setting.kind}: value")
    if setting.kind == "bool":
        assert value is parse_bool(text) and isinstance(value, bool)
    elif setting.kind == "int":
        assert isinstance(value, int) and INT_MIN <= value <= INT_MAX
        assert in_range(setting, value)
    elif setting.kind == "real":
        assert isinstance(value, float) and not math.isnan(value) and in_range(setting, value)
    elif setting.kind == "enum":
        assert value in setting.choices
    elif setting.kind == "list":
        assert isinstance(value, frozenset)
        assert value <= set(setting.choices)
    else:
        assert value == text


def in_range(setting: Setting, value: float) -> bool:
    return (setting.min is None or value >= setting.min) and (
        setting.max is None or value <= setting.max
    )


@given(st.sampled_from([s for s in SETTINGS if s.kind == "int"]), st.integers(INT_MIN, INT_MAX))
def test_an_int_in_range_reads_back(setting: Setting, number: int) -> None:
    if not in_range(setting, number):
        return
    assert parse_value(setting, str(number)) == number
    if setting.unit is not None:
        assert parse_value(setting, f"{number} {setting.unit}") == number
    assert lookup(setting.name.upper()) is setting

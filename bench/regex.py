"""Worst-case match time of pg_hba.conf / pg_ident.conf regexes on a 63-byte name.

For every pattern of the differential test's corpus that pggate accepts, plus patterns that make
backtracking engines take exponential time, times ``search`` (pg_hba.conf) and, where it is
allowed, ``first_group`` (pg_ident.conf's ``\\1``) on 63-byte subjects built to hurt, and prints
the worst median per pattern. Target: well under 1 ms. Run:
``.venv/bin/python bench/regex.py [--repeat N]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from pggate.hba.regex import PgRegex, RegexRefused, compile_regex

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from test_regex_differential import NAMES, PATTERNS  # the shared corpus

ADVERSARIAL = [
    r"^(a+)+$",
    r"^(a|aa)*b$",
    r"(a*)*b",
    r"^(\w+\s?)*$",
    r"(.*a){20}",
    r"^(([a-z])+.)+[A-Z]([a-z])+$",
    r"(x+x+)+y",
    r"(?:a?){25}a{25}",
    r"^(.*)(.*)(.*)(.*)(.*)@$",
    r"^(.*)@(.*)@(.*)$",
    r"\w{255}\w{255}\w{255}",
    r"(?i)^(?:[a-z0-9_]+\.)*[a-z0-9_]+@EXAMPLE\.COM$",
]

SUBJECTS = [
    "a" * 62 + "!",
    "a" * 63,
    "x" * 63,
    "a@" * 31 + "a",
    ("ab " * 21)[:63],
    "A" + "a" * 61 + "A",
    *(name for name in NAMES if len(name.encode("utf-8", "surrogateescape")) == 63),
]


def median_ns(call: Callable[[], object], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter_ns()
        call()
        samples.append(time.perf_counter_ns() - start)
    return statistics.median(samples)


def worst(regex: PgRegex, repeat: int, captures: bool) -> float:
    call = regex.first_group if captures else regex.search
    return max(median_ns(partial(call, subject), repeat) for subject in SUBJECTS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=50, help="timings per pattern and subject")
    args = parser.parse_args()
    assert all(len(s.encode("utf-8", "surrogateescape")) == 63 for s in SUBJECTS)
    rows: list[tuple[str, float, float | None]] = []
    refused = 0
    for pattern in dict.fromkeys([*PATTERNS, *ADVERSARIAL]):
        try:
            regex = compile_regex(pattern)
        except RegexRefused:
            refused += 1
            continue
        try:
            with_captures: PgRegex | None = compile_regex(pattern, captures=True)
        except RegexRefused:
            with_captures = None
        search = worst(regex, args.repeat, captures=False)
        group = None if with_captures is None else worst(with_captures, args.repeat, True)
        rows.append((pattern, search, group))
    rows.sort(key=lambda row: -max(row[1], row[2] or 0))
    print(f"{'pattern':60} {'search µs':>10} {'group 1 µs':>11}")
    for pattern, search, group in rows:
        shown = pattern if len(pattern) <= 60 else pattern[:57] + "..."
        group_text = "-" if group is None else f"{group / 1000:.1f}"
        print(f"{shown!s:60} {search / 1000:10.1f} {group_text:>11}")
    worst_search = max(row[1] for row in rows)
    worst_group = max(row[2] or 0 for row in rows)
    print(
        f"\n{len(rows)} patterns x {len(SUBJECTS)} subjects of 63 bytes ({refused} refused): "
        f"worst median search {worst_search / 1000:.1f} µs, "
        f"worst median group 1 {worst_group / 1000:.1f} µs"
    )


if __name__ == "__main__":
    main()

"""pggate under attack and under faults, on loopback, in one run (issue 12).

Sets up, in a temporary directory removed at the end (also on Ctrl-C or error), a PostgreSQL 15
cluster of its own and, per scenario, a fresh pggate in front of it, then runs the scenarios of
``bench/robust/`` (one module each, whose docstring says what must hold) while a canary (psycopg,
TLS, ``select 1`` every 100 ms) measures what a real client sees.

Prints a markdown table (scenario | load applied | lost | worst canary latency | pass/fail) and
exits non-zero when a row fails.

    .venv/bin/python bench/robustness.py --quick          # every scenario, short (CI)
    .venv/bin/python bench/robustness.py                  # the full run
    .venv/bin/python bench/robustness.py --scenarios flood --keep
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from types import ModuleType

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import run as bench_run  # the set-up helpers of the benchmark
from bench.robust import (
    backend_faults,
    churn,
    common,
    flood,
    fuzz,
    reload_storm,
    slow_readers,
    worker_loss,
)
from bench.robust.common import Row

log = bench_run.log
SCENARIOS: dict[str, ModuleType] = {
    module.NAME: module
    for module in (
        fuzz,
        flood,
        backend_faults,
        reload_storm,
        worker_loss,
        slow_readers,
        churn,
    )
}


def print_table(rows: list[Row], args: argparse.Namespace) -> None:
    print(
        f"\n### pggate robustness ({'quick' if args.quick else 'full'} run, "
        f"{os.cpu_count()} cores)\n"
    )
    print("| scenario | load applied | lost | worst canary latency | pass/fail |")
    print("|---|---|---|---|---|")
    for row in rows:
        verdict = "pass" if row.passed else "FAIL"
        print(f"| {row.scenario} | {row.load} | {row.lost} | {row.latency} | {verdict} |")
    for row in rows:
        for problem in row.problems:
            print(f"- {row.scenario}: {problem}")
    print()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="the short version (CI)")
    p.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        type=lambda s: s.split(","),
        help="comma-separated, of: " + ", ".join(SCENARIOS),
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    for module in SCENARIOS.values():
        module.add_arguments(p)
    args = p.parse_args(argv)
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    for module in SCENARIOS.values():
        module.set_defaults(args)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    nofile = bench_run.raise_nofile(
        max(bench_run.NOFILE, 2 * (args.flood_idle + args.flood_trickle) + 1000, 16384)
    )
    log(f"RLIMIT_NOFILE {nofile}")
    rows: list[Row] = []
    try:
        with common.environment(args.keep) as env:
            for name in args.scenarios:
                rows.append(SCENARIOS[name].run(env, args))
                log(f"{name}: {'pass' if rows[-1].passed else 'FAIL'}")
    except KeyboardInterrupt:
        log("interrupted; everything has been stopped and removed")
        return 130
    print_table(rows, args)
    return 0 if all(row.passed for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

"""DIR/pggate.pid is trusted only under its lock; reload results round-trip (pidfile.py)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pggate.directory import layout, pidfile
from pggate.errors import PggateError


@pytest.fixture
def unrelated() -> Iterator[subprocess.Popen[bytes]]:
    """A live process that has nothing to do with pggate."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process
    process.kill()
    process.wait()


def test_no_file(tmp_path: Path) -> None:
    assert pidfile.read(tmp_path) is None
    assert not pidfile.serving(tmp_path, os.getpid())


def test_a_file_naming_a_live_process_without_the_lock_is_stale(
    tmp_path: Path, unrelated: subprocess.Popen[bytes]
) -> None:
    (tmp_path / layout.PID_FILE).write_text(f"{unrelated.pid}\n6432\n1\n")
    state = pidfile.read(tmp_path)
    assert state is not None
    assert (state.locked, state.pid) == (False, unrelated.pid)
    assert state.stale_note == (
        f'stale pid file "{tmp_path / layout.PID_FILE}" '
        f"(PID {unrelated.pid} is not a pggate server for this directory)"
    )
    assert not pidfile.serving(tmp_path, unrelated.pid)


def test_claim_replaces_a_stale_file_and_is_trusted_while_held(
    tmp_path: Path, unrelated: subprocess.Popen[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / layout.PID_FILE).write_text(f"{unrelated.pid}\n6432\n")
    with caplog.at_level(logging.INFO, logger="pggate.pidfile"):
        lock = pidfile.claim(tmp_path, 6432, 3)
    assert "replacing stale pid file" in caplog.text
    assert f"(PID {unrelated.pid} is not a pggate server" in caplog.text
    state = pidfile.read(tmp_path)
    assert state is not None
    assert (state.locked, state.pid, state.workers, state.stale_note) == (
        True,
        os.getpid(),
        3,
        None,
    )
    assert pidfile.serving(tmp_path, os.getpid())
    lock.release()
    assert pidfile.read(tmp_path) is None


def test_a_second_claim_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pidfile, "CLAIM_SECONDS", 0.05)
    lock = pidfile.claim(tmp_path, 6432, 1)
    try:
        with pytest.raises(PggateError, match=rf"is another pggate \(PID {os.getpid()}\)"):
            pidfile.claim(tmp_path, 6432, 1)
    finally:
        lock.release()


def test_the_status_probe_does_not_keep_the_lock(tmp_path: Path) -> None:
    (tmp_path / layout.PID_FILE).write_text("")
    assert pidfile.read(tmp_path) is not None
    pidfile.claim(tmp_path, 6432, 1).release()


def test_a_forked_worker_neither_keeps_nor_drops_the_supervisors_lock(tmp_path: Path) -> None:
    lock = pidfile.claim(tmp_path, 6432, 2)
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    child = os.fork()
    if child == 0:  # the worker: drop the inherited descriptor, then stay alive
        lock.forget()
        os.write(ready_w, b"x")
        os.read(done_r, 1)
        os._exit(0)
    try:
        assert os.read(ready_r, 1) == b"x"
        assert pidfile.serving(tmp_path, os.getpid())  # the child's close did not unlock it
        lock.release()
        state = pidfile.read(tmp_path)  # the child is alive, yet nobody holds the lock
        assert state is None
        pidfile.claim(tmp_path, 6432, 1).release()
    finally:
        os.write(done_w, b"x")
        os.waitpid(child, 0)
        for fd in (ready_r, ready_w, done_r, done_w):
            os.close(fd)


def test_reload_results_round_trip(tmp_path: Path) -> None:
    assert pidfile.reload_results(tmp_path, 2) == [None, None]
    first = pidfile.ReloadResult(server=10, pid=11, generation=1, errors=())
    second = pidfile.ReloadResult(
        server=10, pid=12, generation=4, errors=('bad line, line 2 of configuration file "x"',)
    )
    pidfile.write_reload_result(tmp_path, 0, first)
    pidfile.write_reload_result(tmp_path, 1, second)
    assert pidfile.reload_results(tmp_path, 2) == [first, second]
    (tmp_path / f"{layout.RELOAD_FILE}.1").write_text('{"server": 10')  # torn: not a result
    assert pidfile.reload_results(tmp_path, 2) == [first, None]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pggate.reload.0", "pggate.reload.1"]

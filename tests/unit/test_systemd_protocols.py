"""The pure parts of the systemd integration: notification datagrams (sd_notify(3)), the
NOTIFY_SOCKET address, the LISTEN_* variables (sd_listen_fds(3)), and what the supervisor
tells systemd about its workers (workers.Readiness)."""

from __future__ import annotations

import pytest

from pggate.errors import ConfigError
from pggate.server import systemd
from pggate.server.workers import Readiness

# -- message -----------------------------------------------------------------------------------


def test_message_fields_one_per_line() -> None:
    assert systemd.message("READY=1", "STATUS=accepting connections", "MAINPID=42") == (
        b"READY=1\nSTATUS=accepting connections\nMAINPID=42"
    )


def test_message_value_stays_one_line() -> None:
    """A newline in a value (a directory name may hold one) cannot start a field of its own."""
    assert systemd.message("STATUS=a\nREADY=1\r\nb") == b"STATUS=a READY=1 b"


def test_message_is_utf8_even_from_undecodable_names() -> None:
    assert systemd.message("STATUS=caf\u00e9 /x/\udcff") == b"STATUS=caf\xc3\xa9 /x/?"


def test_message_keeps_equals_signs_in_values() -> None:
    assert systemd.message("STATUS=a=b") == b"STATUS=a=b"


@pytest.mark.parametrize("field", ["READY", "=1", "ready=1", "RE ADY=1", ""])
def test_message_refuses_non_fields(field: str) -> None:
    with pytest.raises(ValueError, match="not a notification field"):
        systemd.message(field)


# -- NOTIFY_SOCKET -----------------------------------------------------------------------------


def test_notify_address_path_and_abstract() -> None:
    assert systemd.notify_address("/run/systemd/notify") == "/run/systemd/notify"
    assert systemd.notify_address("@pggate/notify") == "\0pggate/notify"


@pytest.mark.parametrize("value", ["notify", "@", "vsock:2:1234", "./notify"])
def test_notify_address_refuses_others(value: str) -> None:
    with pytest.raises(ValueError, match=f'unsupported NOTIFY_SOCKET "{value}"'):
        systemd.notify_address(value)


def test_claim_takes_the_variable_out_of_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(systemd, "_target", systemd._NotifySocket())  # this test's own state
    env = {"NOTIFY_SOCKET": "/run/systemd/notify", "HOME": "/root"}
    assert systemd.claim_notify_socket(env) == "/run/systemd/notify"
    assert env == {"HOME": "/root"}
    assert systemd.claim_notify_socket({}) is None
    assert systemd.notify("READY=1") is False  # claimed: nothing set, nothing sent


# -- LISTEN_* ----------------------------------------------------------------------------------


def test_listen_env_for_this_process_is_taken_out() -> None:
    env = {"LISTEN_PID": "77", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "a:b", "PATH": "/bin"}
    assert systemd.take_listen_env(env, 77) == systemd.ListenEnv((3, 4), ("a", "b"))
    assert env == {"PATH": "/bin"}


def test_listen_env_without_names() -> None:
    env = {"LISTEN_PID": "77", "LISTEN_FDS": "3"}
    got = systemd.take_listen_env(env, 77)
    assert got == systemd.ListenEnv((3, 4, 5), ("unknown", "unknown", "unknown"))


def test_listen_env_empty_name_is_unknown() -> None:
    env = {"LISTEN_PID": "77", "LISTEN_FDS": "2", "LISTEN_FDNAMES": ":web"}
    assert systemd.take_listen_env(env, 77).names == ("unknown", "web")


def test_listen_env_none() -> None:
    env = {"PATH": "/bin"}
    assert systemd.take_listen_env(env, 77) == systemd.ListenEnv()
    assert systemd.take_listen_env({"LISTEN_PID": "77", "LISTEN_FDS": "0"}, 77).fds == ()


def test_listen_env_of_another_process_is_ignored_and_still_removed() -> None:
    """sd_listen_fds: sockets for another PID are not ours; the variables go all the same, so
    that no child of ours mistakes them for its own."""
    env = {"LISTEN_PID": "76", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "a"}
    got = systemd.take_listen_env(env, 77)
    assert got == systemd.ListenEnv(ignored="LISTEN_PID is 76, not this process (77)")
    assert env == {}
    got = systemd.take_listen_env({"LISTEN_FDS": "1"}, 77)
    assert got == systemd.ListenEnv(ignored="LISTEN_FDS is set but LISTEN_PID is not")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LISTEN_PID": "x", "LISTEN_FDS": "1"}, 'invalid LISTEN_PID "x" from systemd'),
        ({"LISTEN_PID": "0", "LISTEN_FDS": "1"}, 'invalid LISTEN_PID "0" from systemd'),
        ({"LISTEN_PID": "-77", "LISTEN_FDS": "1"}, 'invalid LISTEN_PID "-77" from systemd'),
        ({"LISTEN_PID": "77", "LISTEN_FDS": "-1"}, 'invalid LISTEN_FDS "-1" from systemd'),
        ({"LISTEN_PID": "77", "LISTEN_FDS": " 1"}, 'invalid LISTEN_FDS " 1" from systemd'),
        ({"LISTEN_PID": "77", "LISTEN_FDS": "\u0661"}, 'invalid LISTEN_FDS "\u0661" from systemd'),
        (
            {"LISTEN_PID": "77", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "a"},
            'LISTEN_FDNAMES "a" names 1 sockets but LISTEN_FDS is 2',
        ),
        (
            {"LISTEN_PID": "77", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "a:b"},
            'LISTEN_FDNAMES "a:b" names 2 sockets but LISTEN_FDS is 1',
        ),
    ],
)
def test_listen_env_malformed_is_fatal(env: dict[str, str], message: str) -> None:
    """Fail closed: sockets were passed, but pggate cannot tell which."""
    with pytest.raises(ConfigError) as caught:
        systemd.take_listen_env(env, 77)
    assert str(caught.value) == message
    assert env == {}


# -- the supervisor's notifications ------------------------------------------------------------


def test_readiness_waits_for_every_worker() -> None:
    ready = Readiness(count=2, supervisor=10)
    assert ready.check({11: 0}) is None  # one worker not even running
    ready.reported(11, 5, True)
    assert ready.check({11: 0, 12: 1}) is None
    ready.reported(12, 5, True)
    assert ready.check({11: 0, 12: 1}) == [
        "READY=1",
        "STATUS=accepting connections (2 workers)",
        "MAINPID=10",
    ]
    assert ready.check({11: 0, 12: 1}) is None  # said once


def test_readiness_reload_counts_only_configurations_read_after_the_sighup() -> None:
    ready = Readiness(count=2, supervisor=10)
    ready.reported(11, 5, True)
    ready.reported(12, 5, True)
    assert ready.check([11, 12]) is not None
    assert ready.reloading(1_000_000_000) == [
        "RELOADING=1",
        "MONOTONIC_USEC=1000000",
        "STATUS=reloading configuration files",
    ]
    # Worker 11 ends a reload it started before this SIGHUP: not this reload yet.
    ready.reported(11, 999_999_999, True)
    ready.reported(12, 1_000_000_500, True)
    assert ready.check([11, 12]) is None
    ready.reported(11, 1_000_000_700, False)
    assert ready.check([11, 12]) == [
        "READY=1",
        "STATUS=accepting connections (2 workers); configuration files not reloaded, see the log",
    ]


def test_readiness_restarted_worker_must_report() -> None:
    ready = Readiness(count=2, supervisor=10)
    ready.reported(11, 5, True)
    ready.reported(12, 5, True)
    assert ready.check([11, 12]) is not None
    assert ready.reloading(100) is not None
    ready.reported(11, 200, True)
    ready.gone(12)
    assert ready.check([11]) is None  # a slot is empty
    assert ready.check([11, 13]) is None  # its new worker has not reported
    ready.reported(13, 300, True)
    assert ready.check([11, 13]) == ["READY=1", "STATUS=accepting connections (2 workers)"]


def test_readiness_sighup_during_start_delays_the_first_ready() -> None:
    ready = Readiness(count=2, supervisor=10)
    ready.reported(11, 5, True)
    ready.reported(12, 5, True)
    assert ready.reloading(100) is None  # not announced yet: no RELOADING=1
    assert ready.check([11, 12]) is None
    ready.reported(11, 150, True)
    ready.reported(12, 160, True)
    assert ready.check([11, 12]) == [
        "READY=1",
        "STATUS=accepting connections (2 workers)",
        "MAINPID=10",
    ]


def test_readiness_stopping() -> None:
    ready = Readiness(count=1, supervisor=10)
    assert ready.stopping("smart") == ["STOPPING=1", "STATUS=shutting down (smart)"]
    assert ready.stopping("smart") is None
    assert ready.stopping("fast") == ["STOPPING=1", "STATUS=shutting down (fast)"]
    assert ready.stopping("smart") is None  # fast never turns smart
    ready.reported(11, 5, True)
    assert ready.check([11]) is None  # no READY=1 once stopping
    assert ready.reloading(100) is None

"""load / check / reload_diff / render_default_conf over a gateway directory."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pggate.config import (
    SETTINGS,
    ConfigSyntaxError,
    SettingError,
    check,
    load,
    reload_diff,
    render_default_conf,
)
from pggate.config.settings import default_value
from pggate.errors import ConfigError


def gateway(tmp_path: Path, text: str) -> Path:
    (tmp_path / "pggate.conf").write_text(text)
    return tmp_path


def conf(tmp_path: Path) -> str:
    return str(tmp_path / "pggate.conf")


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    config = load(gateway(tmp_path, "# nothing\n"))
    for setting in SETTINGS:
        assert getattr(config, setting.name) == default_value(setting)
    assert config.directory == tmp_path


def test_values_from_the_file(tmp_path: Path) -> None:
    config = load(
        gateway(
            tmp_path,
            "port = 6432\n"
            "SSL on\n"
            "authentication_timeout = '2min'\n"
            "ssl_ecdh_curve = 'prime256v1'\n"
            "log_connections = 'receipt,authorization'\n"
            "listen_addresses = '*'\n",
        )
    )
    assert config.port == 6432
    assert config.ssl is True
    assert config.authentication_timeout == 120
    assert config.ssl_groups == "prime256v1"
    assert config.log_connections == frozenset({"receipt", "authorization"})
    assert config.listen_addresses == "*"


def test_later_value_wins_and_earlier_duplicates_are_not_checked(tmp_path: Path) -> None:
    """As PostgreSQL: only the last occurrence of a parameter is applied (or validated)."""
    config = load(gateway(tmp_path, "port = abc\nport = 1\nPort = 2\nssl_groups = x\n"
                          "ssl_ecdh_curve = y\n"))  # fmt: skip
    assert (config.port, config.ssl_groups) == (2, "y")


def test_relative_directory_becomes_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway(tmp_path, "")
    monkeypatch.chdir(tmp_path.parent)
    config = load(tmp_path.name)
    assert config.directory == tmp_path
    assert config.path("server.crt") == tmp_path / "server.crt"
    assert config.path("/etc/ssl/x.pem") == Path("/etc/ssl/x.pem")
    with pytest.raises(ValueError):
        config.path("")


def test_config_is_frozen(tmp_path: Path) -> None:
    config = load(gateway(tmp_path, ""))
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(config, "port", 1)  # noqa: B010 - the point is that it fails


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path)
    assert str(info.value) == (
        f'could not open configuration file "{conf(tmp_path)}": No such file or directory'
    )


@pytest.mark.parametrize(
    ("text", "message", "line", "parameter"),
    [
        ("shared_buffers = 1", 'unrecognized configuration parameter "shared_buffers"', 1,
         "shared_buffers"),
        ("\nport = abc", 'invalid value for parameter "port": "abc"', 2, "port"),
        ("ssl = maybe", 'parameter "ssl" requires a Boolean value', 1, "ssl"),
        ("workers = 0", '0 is outside the valid range for parameter "workers" (1 .. 64)', 1,
         "workers"),
        ("password_encryption = on", 'invalid value for parameter "password_encryption": "on"',
         1, "password_encryption"),
    ],
)  # fmt: skip
def test_errors_name_file_line_and_parameter(
    tmp_path: Path, text: str, message: str, line: int, parameter: str
) -> None:
    with pytest.raises(SettingError) as info:
        load(gateway(tmp_path, text))
    assert str(info.value) == f'{message}, line {line} of configuration file "{conf(tmp_path)}"'
    assert (info.value.file, info.value.line) == (conf(tmp_path), line)
    assert info.value.parameter == parameter


def test_errors_in_included_files_name_that_file(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "10-tls.conf").write_text("\n\nssl = sometimes\n")
    with pytest.raises(SettingError) as info:
        load(gateway(tmp_path, "include_dir 'conf.d'\n"))
    assert (info.value.file, info.value.line) == (str(tmp_path / "conf.d" / "10-tls.conf"), 3)


def test_check_lists_every_problem_in_order(tmp_path: Path) -> None:
    directory = gateway(tmp_path, "port = abc\nbogus = 1\nssl = \nworkers = 100\n")
    errors = check(directory, {"pool_mode": "transaction"})
    assert [type(e) for e in errors] == [ConfigSyntaxError, SettingError, SettingError,
                                         SettingError, SettingError]  # fmt: skip
    assert [e.line for e in errors] == [3, 2, 1, 4, None]
    assert check(gateway(tmp_path, "port = 1\n")) == []


def test_overrides_win_over_the_file(tmp_path: Path) -> None:
    directory = gateway(tmp_path, "port = 6000\nssl = on\n")
    config = load(directory, {"port": "7000", "log-connections": "all", "SSL_ECDH_CURVE": "x"})
    assert config.port == 7000
    assert config.ssl is True
    assert config.log_connections == frozenset(
        {"receipt", "authentication", "authorization", "setup_durations"}
    )
    assert config.ssl_groups == "x"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"port": "x"},
         'invalid value for parameter "port": "x" (command-line option "-c port=x")'),
        ({"nope": "1"},
         'unrecognized configuration parameter "nope" (command-line option "-c nope=1")'),
    ],
)  # fmt: skip
def test_override_errors_mention_dash_c(
    tmp_path: Path, overrides: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingError) as info:
        load(gateway(tmp_path, ""), overrides)
    assert str(info.value) == message


def test_in_memory_files() -> None:
    class Files:
        def read_text(self, path: str) -> str:
            assert path == "/gw/pggate.conf"
            return "port = 1234\n"

        def list_dir(self, path: str) -> list[str]:
            raise AssertionError(path)

    assert load("/gw", files=Files()).port == 1234


# --- reload ----------------------------------------------------------------------------------


def test_reload_applies_sighup_and_keeps_postmaster_settings(tmp_path: Path) -> None:
    old = load(gateway(tmp_path, "port = 6000\nssl = off\n"))
    new = load(gateway(tmp_path, "port = 7000\nssl = on\nworkers = 2\nhba_file = 'x'\n"))
    applied, messages = reload_diff(old, new)
    assert applied.ssl is True
    assert (applied.port, applied.workers, applied.hba_file) == (6000, 1, "pg_hba.conf")
    assert messages == [
        'parameter "hba_file" cannot be changed without restarting the server',
        'parameter "port" cannot be changed without restarting the server',
        'parameter "workers" cannot be changed without restarting the server',
    ]


def test_reload_without_changes(tmp_path: Path) -> None:
    config = load(gateway(tmp_path, "port = 6000\n"))
    assert reload_diff(config, config) == (config, [])


# --- the sample file -------------------------------------------------------------------------


def test_default_conf_loads_to_the_defaults(tmp_path: Path) -> None:
    text = render_default_conf()
    defaults = load(gateway(tmp_path, text))
    assert defaults == load(gateway(tmp_path, ""))
    for setting in SETTINGS:
        assert f"#{setting.name} = " in text
        assert f"\n{setting.name} = " not in text
    assert "#port = 5432\t\t# (change requires restart)" in text
    assert "#authentication_timeout = 1min\n" in text


def test_default_conf_writes_overrides_as_active_lines(tmp_path: Path) -> None:
    text = render_default_conf(
        backend="host=/run/pg user='me'", port="6432", ssl="on", ssl_ecdh_curve="prime256v1",
        workers="1",
    )  # fmt: skip
    assert "\nbackend = 'host=/run/pg user=''me'''\t\t# (change requires restart)" in text
    assert "\nport = 6432\t" in text
    assert "\nssl = on\n" in text
    assert "\nssl_groups = 'prime256v1'\n" in text
    assert "\n#workers = 1\t" in text  # same as the default: stays a comment
    config = load(gateway(tmp_path, text))
    assert config.backend == "host=/run/pg user='me'"
    assert (config.port, config.ssl, config.ssl_groups) == (6432, True, "prime256v1")


def test_default_conf_rejects_bad_overrides() -> None:
    with pytest.raises(SettingError, match='unrecognized configuration parameter "nope"'):
        render_default_conf(nope="1")
    with pytest.raises(SettingError, match='invalid value for parameter "port"'):
        render_default_conf(port="many")


def test_backend_conninfo_is_refused_where_it_is_written(tmp_path: Path) -> None:
    """Fail closed: a backend conninfo pggate cannot honour whole names file, line and
    parameter: a TLS file it names is loaded where the conninfo is read."""
    directory = gateway(
        tmp_path,
        "port = 6432\n"
        "backend = 'host=db.example.com password=hunter2 sslmode=verify-full sslrootcert=/r.crt'\n",
    )
    errors = check(directory)
    assert len(errors) == 1
    err = errors[0]
    assert (err.file, err.line, err.parameter) == (conf(tmp_path), 2, "backend")
    assert err.message == (
        'invalid value for parameter "backend": root certificate file "/r.crt" does not exist'
    )
    assert err.hint is not None and "sslrootcert=system" in err.hint
    assert "hunter2" not in str(err)
    bad = "host=127.0.0.1 sslmode=verify-ca sslrootcert=/none.crt"
    override = check(directory, {"backend": bad})
    assert f"-c backend={bad}" in str(override[-1])
    (tmp_path / "gss").mkdir()
    # pggate is a GSSAPI client toward its backend (python-gssapi is installed here).
    gss = gateway(tmp_path / "gss", "backend = 'host=db.example.com gssencmode=require'\n")
    assert check(gss) == []


def test_explicitly_set_settings_are_known(tmp_path: Path) -> None:
    """scram_iterations defers to the backend's unless it is set (file or -c)."""
    assert "scram_iterations" not in load(gateway(tmp_path, "")).explicitly_set
    in_file = load(gateway(tmp_path, "scram_iterations = 4096\n"))
    assert "scram_iterations" in in_file.explicitly_set
    by_flag = load(gateway(tmp_path, ""), {"scram_iterations": "10000"})
    assert by_flag.explicitly_set == frozenset({"scram_iterations"})

"""GSSAPI is the optional extra pggate[gss]: every module imports without python-gssapi, none
loads it before GSS is used, and a configuration that needs it says what PostgreSQL built
without GSSAPI says, with a HINT naming the extra."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_hba_fakes import FakeFiles

from pggate import gss_support
from pggate.config import SettingError, load
from pggate.errors import ConfigError
from pggate.hba import AuthFileError, ConnType, HbaPolicy, load_hba

HBA = "/etc/pg/pg_hba.conf"
# The GSS implementation: the only modules that use python-gssapi when it is there.
GSS_MODULES = ("pggate.auth.gss", "pggate.transport.gss")
# Every pggate module but the command's entry point (importing it runs the command).
WALK = """
import importlib, pkgutil, sys
import pggate

def every_module(skip=()):
    for info in pkgutil.walk_packages(pggate.__path__, "pggate."):
        if info.name != "pggate.__main__" and info.name not in skip:
            importlib.import_module(info.name)
            yield info.name
"""


def run_python(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(WALK) + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_every_module_imports_without_gssapi() -> None:
    out = run_python(
        """
        sys.modules["gssapi"] = None  # what an installation without the extra looks like
        names = list(every_module())
        from pggate import gss_support
        from pggate.auth.gss import GssAuthExchange
        from pggate.errors import PggateError
        from pggate.transport.gss import GssChannel
        for make in (lambda: GssChannel(None), lambda: GssAuthExchange(None, user="u")):
            try:
                make()
            except PggateError as err:
                assert gss_support.HINT in str(err), err
            else:
                raise AssertionError("made a GSS object without python-gssapi")
        print(len(names), " ".join(names))
        """
    )
    count, names = out.split(" ", 1)
    assert int(count) > 50
    assert set(GSS_MODULES) <= set(names.split())


def test_gssapi_is_loaded_only_by_the_gss_modules() -> None:
    out = run_python(
        f"""
        names = list(every_module(skip={GSS_MODULES!r}))
        print(sorted(name for name in sys.modules if name.split(".")[0] == "gssapi"))
        """
    )
    assert out.strip() == "[]"


# --- pg_hba.conf without GSSAPI: hba.c's texts where ENABLE_GSS is undefined -----------------


def load_rules(text: str, *, supported: bool) -> tuple[HbaPolicy, list[str]]:
    warnings: list[str] = []
    policy = load_hba(
        HBA,
        FakeFiles({HBA: text}),
        ssl_enabled=True,
        warn=warnings.append,
        gss_supported=lambda: supported,
    )
    return policy, warnings


def test_gss_method_is_not_supported_by_this_build() -> None:
    with pytest.raises(AuthFileError) as info:
        load_rules("host all all 0.0.0.0/0 trust\nhost all all ::/0 gss\n", supported=False)
    (error,) = info.value.errors
    assert str(error) == (
        'invalid authentication method "gss": not supported by this build, '
        f'line 2 of configuration file "{HBA}"'
    )
    assert error.hint == gss_support.HINT
    assert "pip install 'pggate[gss]'" in gss_support.HINT


def test_gss_method_before_the_local_socket_check() -> None:
    # parse_hba_line's unsupauth check comes before "not supported on local sockets".
    with pytest.raises(AuthFileError) as info:
        load_rules("local all all gss\n", supported=False)
    assert info.value.message == 'invalid authentication method "gss": not supported by this build'


def test_hostgssenc_line_loads_with_a_warning() -> None:
    policy, warnings = load_rules("hostgssenc all all 0.0.0.0/0 trust\n", supported=False)
    assert [rule.conn_type for rule in policy.rules] == [ConnType.HOSTGSSENC]
    assert warnings == [
        "hostgssenc record cannot match because GSSAPI is not supported by this build, "
        f'line 1 of configuration file "{HBA}"\nHINT:  {gss_support.HINT}'
    ]


def test_hostgssenc_gss_line_warns_then_fails() -> None:
    warnings: list[str] = []
    with pytest.raises(AuthFileError):
        load_hba(
            HBA,
            FakeFiles({HBA: "hostgssenc all all 0.0.0.0/0 gss\n"}),
            ssl_enabled=True,
            warn=warnings.append,
            gss_supported=lambda: False,
        )
    assert len(warnings) == 1 and warnings[0].startswith("hostgssenc record cannot match")


def test_support_is_asked_only_for_lines_that_need_it() -> None:
    def never() -> bool:
        raise AssertionError("asked about GSSAPI for a file without GSS lines")

    warnings: list[str] = []
    text = "host all all 0.0.0.0/0 scram-sha-256\nhostnogssenc all all ::/0 trust\n"
    policy = load_hba(
        HBA, FakeFiles({HBA: text}), ssl_enabled=True, warn=warnings.append, gss_supported=never
    )
    assert len(policy.rules) == 2 and warnings == []


def test_gss_lines_load_when_supported() -> None:
    policy, warnings = load_rules("hostgssenc all all 0.0.0.0/0 gss\n", supported=True)
    assert len(policy.rules) == 1 and warnings == []


# --- krb_server_keyfile ----------------------------------------------------------------------


@pytest.fixture
def without_gssapi(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gss_support, "available", lambda: False)


@pytest.mark.usefixtures("without_gssapi")
def test_keyfile_is_an_error_where_it_is_set(tmp_path: Path) -> None:
    conf = tmp_path / "pggate.conf"
    conf.write_text("port = 6432\nkrb_server_keyfile = 'krb5.keytab'\n")
    with pytest.raises(SettingError) as info:
        load(tmp_path)
    err = info.value
    assert str(err) == f'{gss_support.KEYFILE_MESSAGE}, line 2 of configuration file "{conf}"'
    assert (err.parameter, err.hint) == ("krb_server_keyfile", gss_support.HINT)


@pytest.mark.usefixtures("without_gssapi")
def test_keyfile_on_the_command_line(tmp_path: Path) -> None:
    (tmp_path / "pggate.conf").write_text("")
    with pytest.raises(ConfigError) as info:
        load(tmp_path, {"krb_server_keyfile": "k.keytab"})
    assert str(info.value) == (
        f'{gss_support.KEYFILE_MESSAGE} (command-line option "-c krb_server_keyfile=k.keytab")'
    )


@pytest.mark.usefixtures("without_gssapi")
def test_empty_keyfile_is_gss_off(tmp_path: Path) -> None:
    (tmp_path / "pggate.conf").write_text("krb_server_keyfile = ''\n")
    assert load(tmp_path).krb_server_keyfile == ""

"""The systemd unit (checked by `systemd-analyze verify`) and `s2s service install|uninstall|status` with a
temporary unit dir and a recording runner: no systemctl, useradd or /etc is touched."""

from __future__ import annotations

import os
import pwd
import re
import subprocess
from pathlib import Path

import pytest

from s2s import service
from s2s.cli import build_parser

NEW_USER = "s2s-test-no-such-user"
KEEP_USER = ("--no-user", "--user", pwd.getpwuid(os.getuid()).pw_name)
"""Install for a user that exists, without creating or changing it."""


class Recorder:
    """Stands in for subprocess: records each command and answers with ``status``."""

    def __init__(self, status: int = 0) -> None:
        self.commands: list[list[str]] = []
        self.status = status

    def __call__(self, cmd: list[str]) -> int:
        self.commands.append(cmd)
        return self.status


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """An install dir as setup.sh leaves it: an executable .venv/bin/s2s and a config file."""
    root = tmp_path / "s2s-edge"
    (root / ".venv" / "bin").mkdir(parents=True)
    executable = root / ".venv" / "bin" / "s2s"
    executable.write_text("#!/bin/sh\nexit 0\n")
    executable.chmod(0o755)
    (root / "configs").mkdir()
    (root / "configs" / "jetson-orin.toml").write_text("[tts]\n")
    return root


def parse(*argv: str):
    """Arguments as the real CLI parses them (the service module is registered by s2s.cli)."""
    return build_parser("service").parse_args(["service", *argv])


def install_args(checkout: Path, tmp_path: Path, *extra: str):
    return parse("install", "--install-dir", str(checkout), "--config", str(checkout / "configs" / "jetson-orin.toml"),
                 "--unit-dir", str(tmp_path / "units"), "--env-dir", str(tmp_path / "etc"), "--user", NEW_USER, *extra)


def test_rendered_unit_has_the_service_settings(checkout: Path) -> None:
    unit = service.render_unit(checkout, checkout / "configs" / "jetson-orin.toml", "s2s", ["audio", "video"])
    assert re.findall(r"@[A-Z_]+@", unit) == []
    for line in ("Type=notify", "NotifyAccess=main", "WatchdogSec=30", "Restart=on-failure", "TimeoutStartSec=600",
                 "KillSignal=SIGTERM", "User=s2s", "SupplementaryGroups=audio video", "StandardOutput=journal",
                 "EnvironmentFile=-/etc/s2s-edge/s2s-edge.env",
                 f"ExecStart={checkout}/.venv/bin/s2s run --config {checkout}/configs/jetson-orin.toml"):
        assert line in unit.splitlines(), line
    assert "PYTHONFAULTHANDLER=1" in unit and "PYTHONUNBUFFERED=1" in unit


def test_systemd_analyze_verify_is_clean(checkout: Path, tmp_path: Path, system_tool) -> None:
    unit_path = tmp_path / service.UNIT_NAME
    unit_path.write_text(service.render_unit(checkout, checkout / "configs" / "jetson-orin.toml", "s2s",
                                             service.existing_groups()))
    result = subprocess.run([system_tool("systemd-analyze"), "verify", "--man=no", str(unit_path)],
                            check=False, capture_output=True, text=True, timeout=60)
    # Exit status 0 even for unknown keys and bad values: only an empty stderr says the unit is clean.
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_systemd_analyze_verify_would_catch_a_bad_key(checkout: Path, tmp_path: Path, system_tool) -> None:
    """The check above can fail: a misspelt key shows up on stderr."""
    unit_path = tmp_path / service.UNIT_NAME
    text = service.render_unit(checkout, checkout / "configs" / "jetson-orin.toml", "s2s", [])
    unit_path.write_text(text.replace("WatchdogSec=30", "WatchdogSecs=30"))
    result = subprocess.run([system_tool("systemd-analyze"), "verify", "--man=no", str(unit_path)],
                            check=False, capture_output=True, text=True, timeout=60)
    assert "WatchdogSecs" in result.stderr


def test_paths_with_spaces_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="without spaces"):
        service.render_unit(tmp_path / "my checkout", tmp_path / "c.toml", "s2s", [])


def test_install_writes_unit_and_env_creates_user_and_enables(checkout: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    runner = Recorder()
    assert service.main(install_args(checkout, tmp_path), runner=runner, running=True) == 0
    unit = (tmp_path / "units" / service.UNIT_NAME).read_text()
    assert f"User={NEW_USER}" in unit and f"WorkingDirectory={checkout}" in unit
    assert (tmp_path / "etc" / "s2s-edge.env").read_text() == service.ENV_EXAMPLE.read_text()
    useradd, reload, enable = runner.commands
    assert useradd[:2] == ["useradd", "--system"] and useradd[-1] == NEW_USER
    groups = service.existing_groups()
    if groups:
        assert useradd[useradd.index("--groups") + 1] == ",".join(groups)
    assert reload == ["systemctl", "daemon-reload"]
    assert enable == ["systemctl", "enable", "--now", service.UNIT_NAME]
    assert "journalctl -u s2s-edge.service -f" in capsys.readouterr().out


def test_install_keeps_an_edited_env_file(checkout: Path, tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "s2s-edge.env").write_text("CUDA_VISIBLE_DEVICES=1\n")
    assert service.main(install_args(checkout, tmp_path, *KEEP_USER), runner=Recorder(), running=True) == 0
    assert (tmp_path / "etc" / "s2s-edge.env").read_text() == "CUDA_VISIBLE_DEVICES=1\n"


def test_install_without_systemd_prints_the_commands(checkout: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    runner = Recorder()
    assert service.main(install_args(checkout, tmp_path, *KEEP_USER), runner=runner, running=False) == 0
    assert runner.commands == []
    out = capsys.readouterr().out
    assert "systemd is not running here" in out
    assert "sudo systemctl daemon-reload" in out and "sudo systemctl enable --now s2s-edge.service" in out
    assert (tmp_path / "units" / service.UNIT_NAME).exists()


def test_install_needs_setup_first(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "c.toml").write_text("")
    args = parse("install", "--install-dir", str(bare), "--config", str(bare / "c.toml"),
                 "--unit-dir", str(tmp_path / "units"), "--env-dir", str(tmp_path / "etc"))
    runner = Recorder()
    assert service.main(args, runner=runner, running=True) == 1
    assert "run ./setup.sh" in capsys.readouterr().out
    assert runner.commands == [] and not (tmp_path / "units").exists()


def test_install_no_user_refuses_a_user_that_does_not_exist(checkout: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    runner = Recorder()
    assert service.main(install_args(checkout, tmp_path, "--no-user"), runner=runner, running=True) == 2
    out = capsys.readouterr().out
    assert f"the service user {NEW_USER!r} does not exist" in out and "useradd --system" in out
    assert runner.commands == [] and not (tmp_path / "units").exists() and not (tmp_path / "etc").exists()


def test_install_stops_when_a_systemctl_step_fails(checkout: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    assert service.main(install_args(checkout, tmp_path, *KEEP_USER), runner=Recorder(status=1), running=True) == 1
    assert "`systemctl daemon-reload` failed" in capsys.readouterr().out


def test_uninstall_reverses_install(checkout: Path, tmp_path: Path) -> None:
    service.main(install_args(checkout, tmp_path, *KEEP_USER), runner=Recorder(), running=True)
    runner = Recorder()
    args = parse("uninstall", "--unit-dir", str(tmp_path / "units"), "--env-dir", str(tmp_path / "etc"),
                 "--user", NEW_USER, "--purge")
    assert service.main(args, runner=runner, running=True) == 0
    assert runner.commands == [["systemctl", "disable", "--now", service.UNIT_NAME], ["systemctl", "daemon-reload"]]
    assert not (tmp_path / "units" / service.UNIT_NAME).exists()
    assert not (tmp_path / "etc").exists()  # --purge; the user does not exist, so no userdel


def test_status(checkout: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    status_args = parse("status", "--unit-dir", str(tmp_path / "units"))
    runner = Recorder()
    assert service.main(status_args, runner=runner, running=True) == 3
    assert "is not installed" in capsys.readouterr().out and runner.commands == []
    service.main(install_args(checkout, tmp_path, *KEEP_USER), runner=Recorder(), running=True)
    assert service.main(status_args, runner=runner, running=True) == 0
    assert runner.commands == [["systemctl", "status", "--no-pager", service.UNIT_NAME]]


def test_the_wyoming_unit_shares_install_and_runs_s2s_wyoming(checkout: Path, tmp_path: Path, system_tool) -> None:
    runner = Recorder()
    assert service.main(install_args(checkout, tmp_path, *KEEP_USER, "--unit", "wyoming"), runner=runner,
                        running=True) == 0
    unit_path = tmp_path / "units" / "s2s-edge-wyoming.service"
    unit = unit_path.read_text()
    command = f"ExecStart={checkout}/.venv/bin/s2s wyoming --config {checkout}/configs/jetson-orin.toml"
    assert command in unit.splitlines()
    assert "Type=notify" in unit and "WatchdogSec=30" in unit and "EnvironmentFile=-/etc/s2s-edge/s2s-edge.env" in unit
    assert runner.commands[-1] == ["systemctl", "enable", "--now", "s2s-edge-wyoming.service"]
    assert not (tmp_path / "units" / service.UNIT_NAME).exists()
    result = subprocess.run([system_tool("systemd-analyze"), "verify", "--man=no", str(unit_path)],
                            check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    args = parse("uninstall", "--unit", "wyoming", "--unit-dir", str(tmp_path / "units"), "--env-dir",
                 str(tmp_path / "etc"), "--user", NEW_USER)
    assert service.main(args, runner=Recorder(), running=True) == 0 and not unit_path.exists()

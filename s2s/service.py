"""`s2s service install|uninstall|status [--unit assistant|wyoming]`: run the assistant (or the Wyoming services
of `s2s wyoming`) as a systemd service.

``install`` renders ``configs/systemd/s2s-edge.service`` with this checkout's paths, creates the service user
(``useradd --system``, in the audio/video/render groups that exist), copies the unit to /etc/systemd/system and
the example environment file to /etc/s2s-edge/ (an existing one is kept), then ``systemctl daemon-reload`` and
``enable --now``. Where systemd is not running (a container), it prints those commands instead.
``uninstall`` reverses it (``--purge`` also removes the environment file and the user); ``status`` shows
``systemctl status``. Every command goes through an injectable runner, so tests make no system calls.
"""

from __future__ import annotations

import argparse
import grp
import os
import pwd
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

UNITS = {"assistant": "s2s-edge.service", "wyoming": "s2s-edge-wyoming.service"}
"""--unit -> the unit file; each has its template in configs/systemd/ and they share one environment file."""
UNIT_NAME = UNITS["assistant"]
REPO = Path(__file__).resolve().parent.parent
TEMPLATE = REPO / "configs" / "systemd" / UNIT_NAME
ENV_EXAMPLE = REPO / "configs" / "systemd" / "s2s-edge.env"
ENV_FILE_NAME = "s2s-edge.env"
DEFAULT_UNIT_DIR = Path("/etc/systemd/system")
DEFAULT_ENV_DIR = Path("/etc/s2s-edge")
DEFAULT_USER = "s2s"
DEFAULT_CONFIG = REPO / "configs" / ("jetson-orin.toml" if Path("/etc/nv_tegra_release").exists() else "default.toml")
DEVICE_GROUPS = ("audio", "video", "render")
"""Sound, the Jetson GPU nodes, and /dev/dri."""

Runner = Callable[[list[str]], int]
"""Runs a command and returns its exit status."""


def run_command(cmd: list[str]) -> int:
    return subprocess.run(cmd, check=False).returncode


def systemd_running() -> bool:
    """True when systemd is PID 1 (sd_booted(3): /run/systemd/system exists)."""
    return Path("/run/systemd/system").is_dir()


def existing_groups(names: tuple[str, ...] = DEVICE_GROUPS) -> list[str]:
    found = []
    for name in names:
        try:
            grp.getgrnam(name)
        except KeyError:
            continue
        found.append(name)
    return found


def user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def render_unit(install_dir: Path, config: Path, user: str, groups: list[str], template: Path = TEMPLATE) -> str:
    """The unit text with the ``@...@`` fields filled in. Paths must be absolute and free of whitespace."""
    for label, path in (("install dir", install_dir), ("config", config)):
        if not path.is_absolute() or re.search(r"\s", str(path)):
            raise ValueError(f"the {label} {str(path)!r} must be an absolute path without spaces (systemd splits "
                             "ExecStart= on whitespace); move the checkout or the config file")
    text = template.read_text()
    for field, value in (("@INSTALL_DIR@", str(install_dir)), ("@CONFIG@", str(config)), ("@USER@", user),
                         ("@GROUPS@", " ".join(groups))):
        text = text.replace(field, value)
    left = sorted(set(re.findall(r"@[A-Z_]+@", text)))
    if left:
        raise ValueError(f"{template} has fields that install does not know: {', '.join(left)}")
    return text


def _systemctl_steps(runner: Runner, commands: list[list[str]], running: bool) -> int:
    """Run the systemctl commands, or print them when systemd is not running here."""
    if not running:
        print("systemd is not running here (a container?); on the target machine run:")
        for cmd in commands:
            print("  sudo " + shlex.join(cmd))
        return 0
    for cmd in commands:
        status = runner(cmd)
        if status != 0:
            print(f"`{shlex.join(cmd)}` failed with exit status {status}; see `journalctl -xe`")
            return status
    return 0


def _needs_root(args: argparse.Namespace) -> str | None:
    if os.geteuid() == 0:
        return None
    for directory in (args.unit_dir, args.env_dir):
        if not os.access(directory if directory.exists() else directory.parent, os.W_OK):
            return (f"{directory} is not writable: run it as root, "
                    f"e.g. `sudo {REPO}/.venv/bin/s2s service {args.action}`")
    return None


def install(args: argparse.Namespace, runner: Runner, running: bool) -> int:
    install_dir = Path(args.install_dir).resolve()
    config = Path(args.service_config).resolve()
    executable = install_dir / ".venv" / "bin" / "s2s"
    if not executable.exists():
        print(f"{executable} does not exist: run ./setup.sh in {install_dir} first")
        return 1
    if not config.is_file():
        print(f"config file {config} does not exist: pass --config PATH (e.g. one of {install_dir}/configs/*.toml)")
        return 1
    if args.no_user and not user_exists(args.user):
        print(f"--no-user: the service user {args.user!r} does not exist, so the service could not start; create it "
              f"(sudo useradd --system --no-create-home --shell /usr/sbin/nologin --user-group {args.user}), pass "
              f"an existing one with --user NAME, or leave out --no-user to let install create it")
        return 2
    problem = _needs_root(args)
    if problem:
        print(problem)
        return 1
    groups = existing_groups()
    if not args.no_user:
        if user_exists(args.user):
            cmd = ["usermod", "--append", "--groups", ",".join(groups), args.user] if groups else []
        else:
            cmd = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group"]
            cmd += (["--groups", ",".join(groups)] if groups else []) + [args.user]
        if cmd and runner(cmd) != 0:
            print(f"`{shlex.join(cmd)}` failed: create the user {args.user!r} by hand, then run install with --no-user")
            return 1
    unit_path = args.unit_dir / args.unit_name
    args.unit_dir.mkdir(parents=True, exist_ok=True)
    unit_path.write_text(render_unit(install_dir, config, args.user, groups, TEMPLATE.with_name(args.unit_name)))
    print(f"wrote {unit_path} (runs {executable} {'run' if args.unit_name == UNIT_NAME else args.unit} --config "
          f"{config} as user {args.user})")
    env_path = args.env_dir / ENV_FILE_NAME
    if env_path.exists():
        print(f"kept {env_path}")
    else:
        args.env_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ENV_EXAMPLE, env_path)
        print(f"wrote {env_path} (overrides; edit it, then restart the service)")
    commands = [["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", args.unit_name]]
    status = _systemctl_steps(runner, commands, running)
    if status == 0 and running:
        print(f"started; follow it with: journalctl -u {args.unit_name} -f")
    return status


def uninstall(args: argparse.Namespace, runner: Runner, running: bool) -> int:
    unit_path = args.unit_dir / args.unit_name
    if not unit_path.exists():
        print(f"{args.unit_name} is not installed in {args.unit_dir}")
        return 0
    problem = _needs_root(args)
    if problem:
        print(problem)
        return 1
    status = _systemctl_steps(runner, [["systemctl", "disable", "--now", args.unit_name]], running)
    if status != 0:
        return status
    unit_path.unlink()
    print(f"removed {unit_path}")
    status = _systemctl_steps(runner, [["systemctl", "daemon-reload"]], running)
    if args.purge:
        env_path = args.env_dir / ENV_FILE_NAME
        if env_path.exists():
            env_path.unlink()
            print(f"removed {env_path}")
        if args.env_dir.is_dir() and not any(args.env_dir.iterdir()):
            args.env_dir.rmdir()
        if user_exists(args.user) and runner(["userdel", args.user]) != 0:
            print(f"`userdel {args.user}` failed; remove the user by hand")
            status = status or 1
    return status


def show_status(args: argparse.Namespace, runner: Runner, running: bool) -> int:
    unit_path = args.unit_dir / args.unit_name
    if not unit_path.exists():
        print(f"{args.unit_name} is not installed ({unit_path} does not exist); install it with `sudo "
              f"{REPO}/.venv/bin/s2s service install --unit {args.unit}`")
        return 3  # systemctl's code for "not running"
    if not running:
        print(f"{unit_path} is installed, but systemd is not running here")
        return 3
    return runner(["systemctl", "status", "--no-pager", args.unit_name])


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `s2s service ...` on the CLI's subparsers."""
    parser = subparsers.add_parser("service", help="install, remove or inspect the systemd service",
                                   description=__doc__.splitlines()[0])
    actions = parser.add_subparsers(dest="action", required=True)
    for name, text in (("install", "render, copy, enable and start the unit"),
                       ("uninstall", "stop, disable and remove the unit"),
                       ("status", "systemctl status of the unit")):
        sub = actions.add_parser(name, help=text)
        sub.add_argument("--unit", choices=list(UNITS), default="assistant",
                         help="the assistant (s2s run) or the Wyoming services (s2s wyoming)")
        sub.add_argument("--unit-dir", type=Path, default=DEFAULT_UNIT_DIR, help="where the unit file goes")
        if name != "status":
            sub.add_argument("--env-dir", type=Path, default=DEFAULT_ENV_DIR, help="where the environment file goes")
            sub.add_argument("--user", default=DEFAULT_USER, help="the service user")
    install_parser = actions.choices["install"]
    install_parser.add_argument("--install-dir", default=str(REPO), help="the checkout with .venv (default: this one)")
    # Its own dest: the CLI's global --config (a list of files merged into this process's config) is another thing.
    install_parser.add_argument("--config", dest="service_config", default=str(DEFAULT_CONFIG),
                                help="the TOML config the service runs with (default: %(default)s)")
    install_parser.add_argument("--no-user", action="store_true", help="do not create or change the service user")
    actions.choices["uninstall"].add_argument("--purge", action="store_true",
                                              help="also remove the environment file and the service user")
    return parser


def main(args: argparse.Namespace, runner: Runner = run_command, running: bool | None = None) -> int:
    """Run `s2s service <action>`; returns the exit status."""
    running = systemd_running() if running is None else running
    args.unit_name = UNITS[args.unit]
    actions = {"install": install, "uninstall": uninstall, "status": show_status}
    return actions[args.action](args, runner, running)

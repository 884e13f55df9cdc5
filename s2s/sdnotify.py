"""systemd's notify protocol (sd_notify(3)) with the standard library only.

Under a ``Type=notify`` unit systemd sets ``$NOTIFY_SOCKET`` to an AF_UNIX datagram socket (a path, or an
abstract name written with a leading ``@``); each message is one datagram of ``KEY=value`` lines, e.g.
``READY=1``, ``STATUS=...``, ``WATCHDOG=1``, ``STOPPING=1``. Run by hand the variable is unset and every call
is a no-op, so the same code runs in and out of systemd.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def _address(value: str) -> str | bytes:
    """The socket address for a ``$NOTIFY_SOCKET`` value; ``@name`` is Linux's abstract namespace."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


def notify(*fields: str) -> bool:
    """Send ``fields`` (e.g. ``"READY=1"``, ``"STATUS=loading"``) to systemd as one message.

    Returns True when a message was sent, False when not run under systemd (or the send failed; logged).
    """
    target = os.environ.get("NOTIFY_SOCKET", "")
    if not target or not fields:
        return False
    message = "\n".join(fields).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(_address(target))
            sock.sendall(message)
    except OSError as exc:
        log.warning("sd_notify to %s failed: %s", target, exc)
        return False
    return True


def watchdog_interval() -> float | None:
    """The watchdog timeout systemd expects pings within (s), or None when no watchdog applies to this process.

    From ``$WATCHDOG_USEC``; ``$WATCHDOG_PID``, when set, must name this process (a child that inherited the
    environment must not ping for its parent).
    """
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec:
        return None
    if pid and pid != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC=%r: not an integer", usec)
        return None
    return value / 1e6 if value > 0 else None

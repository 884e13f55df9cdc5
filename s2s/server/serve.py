"""`s2s serve`: the OpenAI-compatible speech server (FastAPI on uvicorn) over the configured TTS and STT.

    s2s serve [--host ADDR] [--port N] [--no-stt | --no-tts] [--config FILE] [--set section.key=value]

Order at start: the API key (a missing key file stops here), the listening socket (a port in use or a host that
does not resolve stops here, before minutes of model loading), the models, then serving. Under systemd it sends
READY=1 once serving and pings the watchdog while no worker hangs (``s2s.supervisor``). SIGTERM (or Ctrl-C) stops
it: open streams get a few seconds, their jobs are cancelled, the models are released.

Exit status: 0 stopped cleanly, 1 a failure at start (port in use, bad host, missing key file or model), 2 a
configuration error, 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import errno
import logging
import socket
import threading

from s2s.config import Config, load_config

log = logging.getLogger(__name__)

GRACEFUL_STOP_S = 5
"""Seconds open connections get to finish after a stop request."""
BACKLOG = 128


class StartError(RuntimeError):
    """The server cannot start; the message says why and what to do (exit status 1)."""


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host``:``port`` and listening; StartError naming the address otherwise."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartError(f"cannot listen on {host!r}: the host does not resolve ({exc.strerror}); use an address "
                         "of this machine, e.g. 127.0.0.1 or 0.0.0.0 (all interfaces)") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        hint = ("another program (another s2s serve?) listens there; stop it or choose another port"
                if exc.errno == errno.EADDRINUSE else "use an address of this machine (e.g. 127.0.0.1) and a free port")
        raise StartError(f"cannot listen on {host}:{port}: {exc.strerror}; {hint}") from None
    return sock


def server_options(parser: argparse.ArgumentParser, ports: str) -> None:
    """--host and the global options, shared by `s2s serve` and `s2s wyoming`."""
    parser.add_argument("--host", help="address to listen on (default: [server] host, 127.0.0.1)")
    parser.add_argument("--no-stt", action="store_true", help="serve text to speech only (no Whisper loaded)")
    parser.add_argument("--no-tts", action="store_true", help="serve speech to text only (no TTS loaded)")
    parser.epilog = f"Listens on 127.0.0.1 unless --host says otherwise; {ports}."


def server_config(args: argparse.Namespace, **ports: int | None) -> Config:
    """The config with --host and the port options applied (validated)."""
    config = load_config(args.config or [], args.overrides or [])
    if args.host is not None:
        config.server.host = args.host
    for key, value in ports.items():
        if value is not None:
            setattr(config.server, key, value)
    if args.no_stt and args.no_tts:
        raise ValueError("--no-stt and --no-tts together leave nothing to serve")
    config.validate()
    return config


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from s2s.cli import _global_options

    parser = subparsers.add_parser("serve", parents=[_global_options(suppress=True)],
                                   help="OpenAI-compatible speech server (/v1/audio/speech, /transcriptions)",
                                   description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, help="HTTP port (default: [server] port, 8000)")
    server_options(parser, "set server.api_key (or $S2S_API_KEY) before opening it to a network")
    return parser


def main(args: argparse.Namespace) -> int:
    from s2s.server.guards import api_key

    config = server_config(args, port=args.port)
    cfg = config.server
    try:
        key = api_key(cfg)
        sock = listen(cfg.host, cfg.port)
    except (StartError, FileNotFoundError) as exc:
        print(f"error: {exc}")
        return 1
    if not key and cfg.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s without an API key: anyone who reaches this address can use it "
                    "(set server.api_key or $S2S_API_KEY)", cfg.host)
    try:
        return serve(config, sock, tts=not args.no_tts, stt=not args.no_stt)
    finally:
        sock.close()


def load_services(config: Config, tts: bool, stt: bool):
    """The loaded models, or StartError saying what is missing (a bad setting stays a ValueError: exit 2)."""
    from s2s.server.services import Services
    from s2s.supervisor import loading

    loading("loading models")
    try:
        return Services.load(config, tts=tts, stt=stt)
    except (FileNotFoundError, ImportError, RuntimeError, OSError) as exc:
        raise StartError(f"the models could not be loaded: {exc}\n(run `s2s check` to see which are found)") from exc


def serve(config: Config, sock: socket.socket, tts: bool = True, stt: bool = True) -> int:
    import uvicorn

    from s2s.server.app import create_app
    from s2s.supervisor import supervised

    try:
        services = load_services(config, tts, stt)
    except StartError as exc:
        print(f"error: {exc}")
        return 1
    host, port = sock.getsockname()[:2]
    server = uvicorn.Server(uvicorn.Config(create_app(services), log_config=None,
                                           timeout_graceful_shutdown=GRACEFUL_STOP_S))
    try:
        with supervised(services, threading.Event(), status=f"serving on http://{host}:{port}"):
            log.info("serving the OpenAI audio API on http://%s:%d/v1 (Ctrl-C stops)", host, port)
            server.run(sockets=[sock])
    except KeyboardInterrupt:
        return 130
    finally:
        services.close()
    return 0

"""`s2s serve` and `s2s wyoming` as commands: a real start and a clean stop on SIGTERM, and the start failures (port in
use, bad host, missing key file, bad settings) with a clear message and their exit status, before any model loads."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from s2s.server.serve import StartError, listen

pytestmark = pytest.mark.slow

S2S = [sys.executable, "-m", "s2s.cli"]
REPO = Path(__file__).resolve().parent.parent
PIPER = ("--set", "tts.backend=piper", "--set", "stt.device=cpu")


def s2s(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*S2S, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)


@pytest.fixture
def busy_port():
    sock = listen("127.0.0.1", 0)
    yield sock.getsockname()[1]
    sock.close()


def test_serve_starts_answers_and_stops_on_sigterm(tmp_path):
    sock = listen("127.0.0.1", 0)
    port = sock.getsockname()[1]
    sock.close()
    env = {**os.environ, "S2S_VOICES_DIR": str(tmp_path)}
    process = subprocess.Popen([*S2S, "serve", "--port", str(port), "--no-stt", *PIPER], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stdout.read()
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "s2s serve did not come up"
                time.sleep(0.3)
        assert health.json()["stages"][0]["name"] == "tts" and len(health.json()["stages"]) == 1
        response = httpx.post(f"http://127.0.0.1:{port}/v1/audio/speech", timeout=60,
                              json={"input": "Hello.", "response_format": "wav"})
        assert response.status_code == 200 and response.content[:4] == b"RIFF"
        assert httpx.post(f"http://127.0.0.1:{port}/v1/audio/transcriptions", files={"file": b"x"}).status_code == 404
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "serving the OpenAI audio API on http://127.0.0.1" in process.stdout.read()


def test_a_port_in_use_is_a_clear_error_before_loading(busy_port):
    t0 = time.monotonic()
    result = s2s("serve", "--port", str(busy_port), *PIPER)
    assert result.returncode == 1, result.stderr
    assert f"cannot listen on 127.0.0.1:{busy_port}: Address already in use" in result.stdout
    assert "choose another port" in result.stdout
    result = s2s("wyoming", "--tts-port", str(busy_port), *PIPER)
    assert result.returncode == 1 and "Address already in use" in result.stdout
    assert "piper voice" not in result.stderr and time.monotonic() - t0 < 100  # nothing was loaded


def test_a_bad_host_is_a_clear_error(monkeypatch):
    def no_such_host(*args, **kwargs):  # no resolver is asked: the tests send nothing off this machine
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    with pytest.raises(StartError, match="cannot listen on 'nas.home': the host does not resolve"):
        listen("nas.home", 8000)
    monkeypatch.undo()
    result = s2s("serve", "--host", "192.0.2.1", *PIPER)  # TEST-NET: not an address of this machine
    assert result.returncode == 1 and "cannot listen on 192.0.2.1" in result.stdout
    result = s2s("serve", "--host", "local host", *PIPER)
    assert result.returncode == 2 and "[server] host" in result.stderr


def test_a_missing_key_file_and_bad_settings(tmp_path):
    result = s2s("serve", "--set", f"server.api_key_file={tmp_path / 'missing.key'}", *PIPER)
    assert result.returncode == 1 and "missing.key' does not exist" in result.stdout
    for setting, message in (("server.port=70000", "[server] port = 70000 is out of range"),
                             ("server.voice_map=alloy", "voice_map entry 'alloy' must look like name=voice"),
                             ("server.queue_size=-1", "[server] queue_size = -1 is out of range")):
        result = s2s("serve", "--set", setting, *PIPER)
        assert result.returncode == 2 and message in result.stderr, (setting, result.stderr)
    result = s2s("wyoming", "--tts-port", "10400", "--stt-port", "10400", *PIPER)
    assert result.returncode == 2 and "give them different ports" in result.stderr

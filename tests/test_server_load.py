"""`s2s serve` under load and careless clients, on 127.0.0.1 (Piper + Whisper): 50 concurrent requests against a
small queue (each answered or refused with 503, none lost or mixed up, memory flat), clients that leave while
queued or mid-stream (their generation stops), a 100 MB body, malformed multipart, non-UTF-8 JSON, 5000
characters, an engine fault. Every loop is bounded; all traffic stays on loopback."""

from __future__ import annotations

import asyncio
import io
import socket
import threading
import time

import httpx
import pytest
from server_helpers import RunningServer, piper_config, piper_engine, piper_services, rss_mb, whisper_text

from s2s.audio import SPEECH_RATE
from s2s.server.app import create_app
from s2s.server.audio_codecs import decode_audio

pytestmark = pytest.mark.slow

QUEUE_SIZE = 3
CONCURRENT = 50
WORDS = ("elephant", "umbrella", "chocolate", "telephone", "computer", "banana", "hospital", "tomato", "kitchen",
         "mountain", "giraffe", "museum", "pyramid", "volcano", "dinosaur", "penguin", "avocado", "calendar",
         "engineer", "festival", "guitar", "helicopter", "kangaroo", "lemonade", "magazine", "newspaper", "orchestra",
         "pineapple", "restaurant", "sandwich", "tornado", "universe", "vitamin", "waterfall", "yesterday",
         "alphabet", "butterfly", "camera", "diamond", "astronaut", "furniture", "gorilla", "hamburger", "island",
         "jacket", "keyboard", "library", "microphone", "necklace", "octopus")


class CountingEngine:
    """The session's Piper engine, counting what it speaks; "explode" raises RuntimeError mid-request."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.name, self.sample_rate = engine.name, engine.sample_rate
        self.spoken: list[str] = []
        self.chunks = 0

    def warmup(self) -> None:
        pass

    def synthesize(self, text, cancel=None):
        self.spoken.append(text)
        for chunk in self.engine.synthesize(text, cancel):
            if "explode" in text:
                raise RuntimeError("engine fault")
            self.chunks += 1
            yield chunk


@pytest.fixture(scope="module")
def engine():
    return CountingEngine(piper_engine())


@pytest.fixture(scope="module")
def server(engine, tmp_path_factory):
    config = piper_config(f"server.queue_size={QUEUE_SIZE}", "server.request_timeout_s=120")
    services = piper_services(config, tmp_path_factory.mktemp("voices"), engine=engine)
    with RunningServer(create_app(services)) as running:
        yield running
    services.close()


async def burst(url: str) -> list[tuple[int, str, httpx.Response]]:
    """CONCURRENT requests at once, each with its own word; (status, word, response) per request."""
    limits = httpx.Limits(max_connections=CONCURRENT)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        async def one(word: str):
            response = await client.post("/v1/audio/speech", json={
                "model": "tts-1", "voice": "alloy", "input": f"The word is {word}.", "response_format": "wav"})
            return response.status_code, word, response
        return await asyncio.gather(*(one(word) for word in WORDS[:CONCURRENT]))


def test_concurrent_requests_are_answered_or_refused_and_never_mixed_up(server):
    before = None
    for round_ in range(2):
        results = asyncio.run(burst(server.url))
        served = [(word, response) for status, word, response in results if status == 200]
        refused = [response for status, _, response in results if status == 503]
        assert len(served) + len(refused) == CONCURRENT, [status for status, _, _ in results]
        assert len(served) >= QUEUE_SIZE + 1 and refused
        for response in refused:
            assert response.json()["error"]["code"] == "server_busy"
            assert 1 <= int(response.headers["retry-after"]) <= 60
        misheard = []
        for word, response in served:
            heard = whisper_text(decode_audio(io.BytesIO(response.content), SPEECH_RATE, 30.0), SPEECH_RATE).lower()
            assert not [w for w in WORDS if w != word and w in heard], (word, heard)  # another request's audio
            if word not in heard.replace(" ", ""):
                misheard.append((word, heard))
        assert len(misheard) <= 1, misheard  # Whisper tiny may mishear one word of Piper's
        if round_ == 0:
            before = rss_mb()
    assert rss_mb() - before < 40, "memory grew over a second burst"


def test_a_client_that_leaves_mid_stream_stops_its_generation(server, engine):
    text = " ".join(f"Sentence {n} of a long answer that nobody will hear to the end." for n in range(60))
    chunks_before = engine.chunks
    request = {"input": text, "voice": "alloy", "response_format": "pcm"}
    with httpx.Client(base_url=server.url, timeout=60) as client, client.stream("POST", "/v1/audio/speech",
                                                                                 json=request) as response:
        assert response.status_code == 200
        next(response.iter_bytes())
    # the connection is closed here, after the first bytes
    deadline = time.monotonic() + 60  # generous: a loaded CI machine; the chunk count below is the proof
    while time.monotonic() < deadline and httpx.get(f"{server.url}/health").json()["stages"][0]["busy_s"] > 0:
        time.sleep(0.1)
    assert httpx.get(f"{server.url}/health").json()["stages"][0]["busy_s"] == 0
    assert engine.chunks - chunks_before < 30, "the generation went on after the client left"
    response = httpx.post(f"{server.url}/v1/audio/speech", json={"input": "Still here.", "response_format": "wav"},
                          timeout=60)
    assert response.status_code == 200


def test_a_client_that_leaves_while_queued_is_never_spoken(server, engine):
    long_text = " ".join(f"Filler sentence {n} keeps the engine busy for a while." for n in range(12))
    results = {}

    def long_request():
        results["long"] = httpx.post(f"{server.url}/v1/audio/speech", timeout=60,
                                     json={"input": long_text, "response_format": "pcm"}).status_code

    first = threading.Thread(target=long_request)
    first.start()
    time.sleep(0.3)
    with pytest.raises(httpx.TimeoutException):  # gives up while its request waits behind the long one
        httpx.post(f"{server.url}/v1/audio/speech", json={"input": "A waiting request nobody wants."},
                   timeout=0.3)
    first.join(60)
    assert results["long"] == 200
    time.sleep(0.5)
    assert not any("nobody wants" in text for text in engine.spoken)


def raw_request(port: int, head: bytes, body_parts, read_timeout: float = 30.0) -> bytes:
    """Send an HTTP request by hand (the body may be cut off by the server), return what the server answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout) as sock:
        sock.sendall(head)
        try:
            for part in body_parts:
                sock.sendall(part)
        except OSError:  # the server answered and closed before the whole body was sent
            pass
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except OSError:
            pass
    return answer


def test_a_100_mb_body_is_refused_without_being_read(server):
    big = 100_000_000
    head = (f"POST /v1/audio/speech HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {big}\r\nConnection: close\r\n\r\n").encode()
    t0 = time.monotonic()
    answer = raw_request(server.port, head, [b"{" + b" " * 65536])
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"request_too_large" in answer and time.monotonic() - t0 < 10
    # Without a length (chunked): counted while read, cut off at the upload limit (25 MB), answered 413.
    head = (b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: multipart/form-data; boundary=xyz\r\nConnection: close\r\n\r\n")
    part = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n\r\n'
    block = b"x" * 1_000_000
    blocks = [part, *(block for _ in range(100))]
    chunked = (f"{len(block):x}\r\n".encode() + block + b"\r\n" for block in blocks)
    answer = raw_request(server.port, head, chunked)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert httpx.get(f"{server.url}/health").status_code == 200


@pytest.mark.parametrize("content_type, body", [
    ("multipart/form-data; boundary=xyz", b"--xyz\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nabc"),
    ("multipart/form-data", b"no boundary at all"),
    ("multipart/form-data; boundary=xyz", b"\xff\xfe\x00garbage--"),
])
def test_malformed_multipart_is_400(server, content_type, body):
    response = httpx.post(f"{server.url}/v1/audio/transcriptions", content=body,
                          headers={"content-type": content_type})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert response.json()["error"]["code"] in ("invalid_body", "missing_required_parameter")


def test_non_utf8_and_oversized_text_are_400(server):
    response = httpx.post(f"{server.url}/v1/audio/speech", content=b'{"input": "caf\xe9 \xff", "voice": "alloy"}',
                          headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_body"
    response = httpx.post(f"{server.url}/v1/audio/speech", json={"input": "a" * 5000, "voice": "alloy"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "string_above_max_length"
    response = httpx.post(f"{server.url}/v1/audio/speech", json={"input": 42})
    assert response.status_code == 400 and response.json()["error"]["param"] == "input"
    response = httpx.post(f"{server.url}/v1/audio/speech", json={"input": "Emoji 🎉 and 中文 text.",
                                                                "response_format": "wav"}, timeout=60)
    assert response.status_code == 200


def test_an_engine_fault_fails_that_request_alone(server):
    response = httpx.post(f"{server.url}/v1/audio/speech", json={"input": "Please explode now."}, timeout=60)
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "server_error"
    response = httpx.post(f"{server.url}/v1/audio/speech", json={"input": "Fine again.", "response_format": "wav"},
                          timeout=60)
    assert response.status_code == 200 and len(response.content) > 10_000

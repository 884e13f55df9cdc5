"""Benchmark `s2s serve`'s /v1/audio/speech: time to first byte and RTF for one client, then 1, 2, 4, 8 concurrent
streaming clients; the engine's own first-audio time beside it (the server's overhead is the difference).

Usage (GPU machine, repo root, our stack on PYTHONPATH as for bench_qwen3.py, see bench/README.md):
    python bench/serve.py --out OUT [--size 0.6b] [--ckpts /tmp/ckpts] [--frames 100] [--clients 1 2 4 8]
    python bench/serve.py --out OUT --url http://127.0.0.1:8000/v1 --label fq3-server   # any running OpenAI server
    python bench/serve.py --out /tmp/x --size tiny --device cpu --frames 8 --requests 2   # a CPU smoke run

It builds the synthetic CustomVoice checkpoint (random weights, the exact architecture; `bench/build_checkpoints.py`,
once per machine), times the engine in this process (``synthesize`` -> first chunk, as the server calls it), frees
it, then starts `s2s serve --no-stt` on 127.0.0.1 with that checkpoint and ``tts.max_new_tokens = frames + 1`` (random
weights hardly ever emit EOS, so an utterance is ``frames`` frames: 8 s for 100) and drives it with plain HTTP
clients (stdlib ``http.client``, one thread per client) asking for streamed ``pcm``. With ``--url`` it drives a
server that is already running instead (e.g. faster-qwen3-tts's ``examples/openai_server.py``), the same way.

Per request: TTFB (request sent -> first audio byte), RTF = audio seconds / wall seconds (request -> last byte;
above 1 is faster than real time). Per concurrency level: every request's TTFB p50/p90, each client's median RTF,
and the aggregate audio seconds per wall second. Results: OUT/serve-<label>.json and OUT/serve-<label>.md; the
server's log is OUT/serve-<label>.log.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from build_checkpoints import checkpoint_dir
from common import SPEAKER, TEXT, environment, setup_logging

log = logging.getLogger("bench")

PCM_RATE = 24000
"""Hz of the ``pcm`` response format (16-bit mono)."""
START_TIMEOUT_S = 900
"""Model load, warm-up and graph capture of the server."""


def pctl(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def speech_request(url: str, voice: str, model: str, text: str) -> dict:
    """One streamed /audio/speech request: ttfb_ms, wall_s, audio_s, rtf."""
    parsed = urllib.parse.urlparse(url)
    body = json.dumps({"model": model, "voice": voice, "input": text, "response_format": "pcm"})
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=600)
    try:
        start = time.perf_counter()
        connection.request("POST", f"{parsed.path.rstrip('/')}/audio/speech", body,
                           {"Content-Type": "application/json", "Authorization": "Bearer bench"})
        response = connection.getresponse()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {response.read()[:300]!r}")
        first, size = None, 0
        while chunk := response.read1(65536):
            if first is None:
                first = time.perf_counter()
            size += len(chunk)
        end = time.perf_counter()
    finally:
        connection.close()
    audio_s = size / 2 / PCM_RATE
    return {"ttfb_ms": (first - start) * 1000 if first else None, "wall_s": end - start, "audio_s": audio_s,
            "rtf": audio_s / (end - start)}


def concurrent(url: str, clients: int, requests: int, voice: str, model: str) -> dict:
    """``clients`` threads, each sending ``requests`` requests back to back, all starting together."""
    results: list[list[dict]] = [[] for _ in range(clients)]
    errors: list[str] = []
    barrier = threading.Barrier(clients)

    def client(i: int) -> None:
        barrier.wait()
        for _ in range(requests):
            try:
                results[i].append(speech_request(url, voice, model, TEXT))
            except Exception as exc:  # reported, the others carry on
                errors.append(f"client {i}: {exc}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    flat = [r for per_client in results for r in per_client if r["ttfb_ms"] is not None]
    if not flat:
        return {"clients": clients, "errors": errors}
    ttfbs = [r["ttfb_ms"] for r in flat]
    return {
        "clients": clients,
        "requests": len(flat),
        "ttfb_ms_p50": round(pctl(ttfbs, 0.5), 1),
        "ttfb_ms_p90": round(pctl(ttfbs, 0.9), 1),
        "client_rtf_median": [round(statistics.median(r["rtf"] for r in rs), 2) for rs in results if rs],
        "rtf_min": round(min(r["rtf"] for r in flat), 2),
        "audio_s_per_request": round(statistics.median(r["audio_s"] for r in flat), 2),
        "aggregate_audio_s_per_s": round(sum(r["audio_s"] for r in flat) / wall, 2),
        "errors": errors,
    }


def engine_first_audio(ckpt: Path, device: str, frames: int, repeats: int) -> dict:
    """The engine's own first-audio time through ``synthesize`` (what the server calls), in this process."""
    import gc

    import torch

    from s2s.config import TTSConfig
    from s2s.tts_engine import make_engine

    cfg = TTSConfig(backend="qwen3", model=str(ckpt), device=device, speaker=SPEAKER, language="english",
                    max_new_tokens=frames + 1)
    engine = make_engine(cfg)
    engine.warmup()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        stream = engine.synthesize(TEXT)
        next(iter(stream))
        times.append((time.perf_counter() - start) * 1000)
        stream.close()
    del engine, stream
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return {"first_audio_ms_p50": round(pctl(times, 0.5), 1), "first_audio_ms_p90": round(pctl(times, 0.9), 1)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(ckpt: Path, device: str, frames: int, queue: int, log_path: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    settings = ["tts.backend=qwen3", f"tts.model={ckpt}", f"tts.device={device}", f"tts.speaker={SPEAKER}",
                "tts.language=english", f"tts.max_new_tokens={frames + 1}", f"server.queue_size={queue}",
                "server.request_timeout_s=900"]
    cmd = [sys.executable, "-m", "s2s.cli", "serve", "--no-stt", "--port", str(port)]
    cmd += [arg for setting in settings for arg in ("--set", setting)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log_path.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"s2s serve exited with {process.returncode}; see {log_path}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return process, url
        except OSError:
            pass
        time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"s2s serve did not come up within {START_TIMEOUT_S} s; see {log_path}")


def markdown(result: dict) -> str:
    lines = [f"# /v1/audio/speech benchmark: {result['label']}", "",
             f"{result['environment'].get('gpu', 'no GPU')}, torch {result['environment'].get('torch')}, "
             f"{result['date']}; {result['frames']} frames per utterance (EOS blocked by the frame cap), "
             f"streamed pcm, {result['requests_per_client']} requests per client.", ""]
    engine = result.get("engine")
    if engine:
        lines += [f"Engine alone (synthesize -> first chunk): p50 {engine['first_audio_ms_p50']} ms, "
                  f"p90 {engine['first_audio_ms_p90']} ms.", ""]
    lines += ["| clients | TTFB p50 (ms) | TTFB p90 (ms) | server overhead p50 (ms) | RTF per client (median) | "
              "aggregate audio s/s |", "|---|---|---|---|---|---|"]
    for row in result["levels"]:
        if "ttfb_ms_p50" not in row:
            lines.append(f"| {row['clients']} | failed: {'; '.join(row['errors'])[:200]} | | | | |")
            continue
        overhead = round(row["ttfb_ms_p50"] - engine["first_audio_ms_p50"], 1) if engine else ""
        lines.append(f"| {row['clients']} | {row['ttfb_ms_p50']} | {row['ttfb_ms_p90']} | {overhead} | "
                     f"{', '.join(map(str, row['client_rtf_median']))} | {row['aggregate_audio_s_per_s']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="results folder")
    parser.add_argument("--size", default="0.6b", choices=["tiny", "0.6b", "1.7b"])
    parser.add_argument("--ckpts", type=Path, default=Path(os.environ.get("CKPTS", "/tmp/ckpts")))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--frames", type=int, default=100, help="codec frames per utterance (80 ms each)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--requests", type=int, default=3, help="requests per client and level")
    parser.add_argument("--engine-repeats", type=int, default=10)
    parser.add_argument("--url", help="bench this running server (…/v1) instead of starting s2s serve")
    parser.add_argument("--voice", default=SPEAKER)
    parser.add_argument("--model", default="tts-1")
    parser.add_argument("--label", help="name of the result files (default: ours-<size>)")
    args = parser.parse_args()
    setup_logging()
    label = args.label or (f"ours-{args.size}" if not args.url else "server")
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"label": label, "date": time.strftime("%Y-%m-%d"), "frames": args.frames,
              "requests_per_client": args.requests, "environment": environment(), "levels": []}
    process = None
    url = args.url
    if url is None:
        import patches

        patches.apply()
        from s2s.checkpoint_builder.build import build_checkpoint

        ckpt = checkpoint_dir(args.ckpts, args.size)
        build_checkpoint(ckpt, size=args.size, kind="custom_voice", seed=0)  # a no-op when already built
        result["engine"] = engine_first_audio(ckpt, args.device, args.frames, args.engine_repeats)
        log.info("engine first audio: %s", result["engine"])
        log_path = args.out / f"serve-{label}.log"
        process, url = start_server(ckpt, args.device, args.frames, 2 * max(args.clients), log_path)
    try:
        speech_request(url, args.voice, args.model, TEXT)  # warm-up: first request through every layer
        for clients in args.clients:
            row = concurrent(url, clients, args.requests, args.voice, args.model)
            log.info("%d clients: %s", clients, row)
            result["levels"].append(row)
    finally:
        if process is not None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
    (args.out / f"serve-{label}.json").write_text(json.dumps(result, indent=2))
    (args.out / f"serve-{label}.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()

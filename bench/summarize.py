"""Turn the benchmark's JSON files into the markdown summary (ratios, bandwidth floors, targets, Orin projection).

Usage: python bench/summarize.py --json DIR [--out bench/results/DATE-GPU.md] [--table-only]
DIR holds <system>-<size>.json from bench/run_all.sh (and bandwidth.json). Standard library only.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

ORIN_BANDWIDTH_GBPS = 204.8
ORIN_GPU_CLOCK_GHZ = 1.3
"""Jetson AGX Orin 64 GB: GPU max clock 1.3 GHz (data sheet)."""
BENCH_GPU_CLOCK_GHZ = 1.98
"""H100 SXM and H200 (the benchmark GPUs): up to 1.98 GHz (nvidia-smi clocks.max.sm 1980 MHz on the H200)."""
FQ3_ORIN_MS = {"0.6b": 54.0, "1.7b": 66.0}
"""faster-qwen3-tts's own published Jetson AGX Orin 64 GB figures (ms per step, bf16, CUDA graphs)."""
SYSTEM_ORDER = ["ours-graphs", "ours-compile", "ours-eager", "fq3", "reference"]
TARGET_MS = {"0.6b": 6.0, "1.7b": 6.5}
"""Absolute targets, set for an H100; the ratio to faster-qwen3-tts in the same run holds on any GPU."""
TARGET_RATIO_VS_FQ3 = 3.0
TARGET_FIRST_AUDIO_MS = 50.0
TARGET_STREAM_RTF = 10.0
TARGET_PEAK_GIB = 3.0


NOTES = [
    "- Our streaming decodes each chunk with the stateful codec decoder (exact: equal to the one-shot decode); "
    "faster-qwen3-tts re-decodes each chunk with 25 frames of left context (an approximation, cheaper per chunk "
    "only for long histories). Both include the codec decoding in every figure marked 'with decode' or 'first audio'.",
    "- faster-qwen3-tts has one chunk size per stream: its first-audio figures use chunk_size 1, 2 and 4 for the "
    "whole stream; ours uses a first chunk of 1, 2 or 4 frames, then chunks of 4.",
    "- The reference qwen-tts has no streaming output: its first audio is the whole utterance.",
    "- The eager row (no CUDA graphs) is host-bound and noisy (launch-rate limited): a reference point only.",
    "- Each row's measurement time is in the ms/frame table; rows from the same call share one machine.",
]


def load(json_dir: Path) -> tuple[dict[tuple[str, str], dict[str, Any]], dict[str, Any] | None]:
    results: dict[tuple[str, str], dict[str, Any]] = {}
    bandwidth = None
    for path in sorted(json_dir.glob("*.json")):
        data = json.loads(path.read_text())
        if data.get("system") == "bandwidth":
            bandwidth = data
            continue
        system = data["system"]
        key = "ours-graphs" if system == "ours" else "fq3" if system == "faster-qwen3-tts" else system
        results[(key, data["size"])] = data
    return results, bandwidth


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    return f"{value:.{digits}f}"


def floor_ms(data: dict[str, Any], gbps: float) -> float:
    return data["weights_per_frame"]["bytes"] / (gbps * 1e9) * 1e3


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


class Summary:
    """Builds the markdown from the loaded results."""

    def __init__(self, results: dict[tuple[str, str], dict[str, Any]], bandwidth: dict[str, Any] | None) -> None:
        self.results = results
        self.gbps = bandwidth["copy"]["gbps"] if bandwidth else None
        self.sizes = sorted({size for _, size in results})
        self.systems = [s for s in SYSTEM_ORDER if any((s, size) in results for size in self.sizes)]
        main = results.get(("ours-graphs", "0.6b")) or next(iter(results.values()), bandwidth or {})
        self.env = main.get("environment", {})

    def get(self, system: str, size: str) -> dict[str, Any] | None:
        return self.results.get((system, size))

    def per_frame_table(self) -> list[str]:
        lines = [
            "| system | size | ms/frame | ms/frame incl. prefill | faster-qwen3-tts ms ÷ this | bandwidth floor ms "
            "| × floor | measured (UTC) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for size in self.sizes:
            peer = self.get("fq3", size)
            for system in self.systems:
                data = self.get(system, size)
                if data is None:
                    continue
                ms = data["ms_per_frame"]
                ratio = f"{peer['ms_per_frame'] / ms:.2f}" if peer else "—"
                floor = floor_ms(data, self.gbps) if self.gbps else None
                times = f"{ms / floor:.1f}×" if floor else "—"
                lines.append(
                    f"| {data['label']} | {size} | {fmt(ms, 2)} | {fmt(data['ms_per_frame_incl_prefill'], 2)} "
                    f"| {ratio} | {fmt(floor, 2)} | {times} | {data['environment'].get('date_utc', '?')[:16]} |"
                )
        return lines

    def latency_table(self) -> list[str]:
        lines = [
            "| system | size | first audio chunk 1 / 2 / 4 frames (ms) | RTF non-streaming (with decode) "
            "| streaming RTF | gap-free | min slack (ms) | peak GPU GiB | capture s |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for size in self.sizes:
            for system in self.systems:
                data = self.get(system, size)
                if data is None or system == "ours-eager":
                    continue
                first = data.get("first_audio_ms") or {}
                if "whole_utterance" in first:
                    first_text = f"{fmt(first['whole_utterance'], 0)} (whole utterance, no streaming)"
                else:
                    first_text = " / ".join(fmt(first.get(f"chunk_{n}"), 1) for n in (1, 2, 4))
                stream = data.get("streaming") or {}
                stream_label = (
                    f"{fmt(stream.get('rtf'), 1)} (chunk {stream['chunk_size']}, first {stream['first_chunk_size']})"
                    if stream
                    else "—"
                )
                lines.append(
                    f"| {data['label']} | {size} | {first_text} | {fmt(data['non_streaming']['rtf'], 2)} "
                    f"| {stream_label} | {fmt(stream.get('gap_free'))} | {fmt(stream.get('min_slack_ms'), 1)} "
                    f"| {fmt(data['memory'].get('peak_allocated_gib'), 2)} | {fmt(data.get('capture_s'), 2)} |"
                )
        return lines

    def targets(self) -> list[str]:
        lines = ["| target | measured | verdict |", "|---|---|---|"]
        for size in self.sizes:
            ours, peer = self.get("ours-graphs", size), self.get("fq3", size)
            if ours is None:
                lines.append(f"| {size} targets | our engine did not produce results | **missed** |")
                continue
            ms = ours["ms_per_frame"]
            lines.append(f"| {size} ≤ {TARGET_MS[size]} ms/frame (set for an H100) | {ms:.2f} "
                         f"| {verdict(ms <= TARGET_MS[size])} |")
            if peer:
                ratio = peer["ms_per_frame"] / ms
                lines.append(
                    f"| {size} ≥ {TARGET_RATIO_VS_FQ3}× fewer ms/frame than faster-qwen3-tts | {ratio:.2f}× "
                    f"| {verdict(ratio >= TARGET_RATIO_VS_FQ3)} |"
                )
        ours = self.get("ours-graphs", "0.6b")
        if ours and ours.get("first_audio_ms"):
            first = ours["first_audio_ms"]["chunk_2"]
            lines.append(
                f"| 0.6b first audio ≤ {TARGET_FIRST_AUDIO_MS:.0f} ms (first chunk 2 frames) | {first:.1f} ms "
                f"| {verdict(first <= TARGET_FIRST_AUDIO_MS)} |"
            )
            stream = ours["streaming"]
            ok = stream["rtf"] >= TARGET_STREAM_RTF and stream["gap_free"]
            lines.append(
                f"| 0.6b streaming RTF ≥ {TARGET_STREAM_RTF:.0f}, chunk 4, no gap | RTF {stream['rtf']:.1f}, "
                f"min slack {stream['min_slack_ms']:.1f} ms | {verdict(ok)} |"
            )
            peak = ours["memory"]["peak_allocated_gib"]
            lines.append(
                f"| 0.6b peak GPU memory ≤ {TARGET_PEAK_GIB:.0f} GiB at max_seq_len {ours['max_seq_len']} "
                f"| {peak:.2f} GiB | {verdict(peak <= TARGET_PEAK_GIB)} |"
            )
        return lines

    def orin_projection(self) -> list[str]:
        """Two-term model: weight bytes over bandwidth + the rest (launches, host work) scaled to Orin."""
        if not self.gbps:
            return ["(no bandwidth measurement in this run)"]
        clock_scale = BENCH_GPU_CLOCK_GHZ / ORIN_GPU_CLOCK_GHZ
        lines = [
            "**Projection, not a measurement.** Model: ms/frame on Orin = weight bytes / 204.8 GB/s "
            "(spec bandwidth, assumed reached) + the part of the ms/frame measured here above this GPU's bandwidth "
            f"floor (kernel launches, small-kernel latency) scaled by s. Two values of s: the GPU clock ratio "
            f"({BENCH_GPU_CLOCK_GHZ} / {ORIN_GPU_CLOCK_GHZ} GHz = {clock_scale:.2f}), and s calibrated so that the "
            "model reproduces faster-qwen3-tts's own published Orin figures (0.6B 54 ms, 1.7B 66 ms per step) "
            "from its numbers in this run.",
            "",
            "| system | size | Orin bandwidth floor ms | projected ms/frame (s = clock) | projected ms/frame "
            "(s calibrated) | projected RTF (calibrated) |",
            "|---|---|---|---|---|---|",
        ]
        for size in self.sizes:
            peer = self.get("fq3", size)
            calibrated = None
            if peer:
                peer_over = peer["ms_per_frame"] - floor_ms(peer, self.gbps)
                calibrated = (FQ3_ORIN_MS[size] - floor_ms(peer, ORIN_BANDWIDTH_GBPS)) / peer_over
            for system in ("ours-graphs", "ours-compile", "fq3"):
                data = self.get(system, size)
                if data is None:
                    continue
                orin_floor = floor_ms(data, ORIN_BANDWIDTH_GBPS)
                over = max(0.0, data["ms_per_frame"] - floor_ms(data, self.gbps))
                by_clock = orin_floor + over * clock_scale
                by_fq3 = orin_floor + over * calibrated if calibrated else None
                rtf = 80.0 / by_fq3 if by_fq3 else None
                lines.append(
                    f"| {data['label']} | {size} | {orin_floor:.1f} | {by_clock:.1f} | {fmt(by_fq3, 1)} "
                    f"| {fmt(rtf, 2)} |"
                )
            if calibrated:
                lines.append(f"| (calibrated s for {size}) | | | | s = {calibrated:.2f} | |")
        return lines

    def chunk_times(self) -> list[str]:
        lines = []
        for size in self.sizes:
            data = self.get("ours-graphs", size)
            if data is None or not data.get("streaming"):
                continue
            stream = data["streaming"]
            lines += [
                f"Our engine, {size}, chunk {stream['chunk_size']} (first chunk {stream['first_chunk_size']}), "
                f"{data['frames']} frames: chunk ready time vs audio already delivered before it (ms). A chunk is "
                "on time when it is ready before the audio before it has played (playback starts at chunk 1).",
                "",
                "| chunk | ready (ms) | audio delivered before it (ms) | due at (ms) |",
                "|---|---|---|---|",
            ]
            start = stream["ready_ms"][0]
            before = [0.0] + stream["cum_audio_ms"][:-1]
            for i, (ready, played) in enumerate(zip(stream["ready_ms"], before)):
                lines.append(f"| {i + 1} | {ready:.1f} | {played:.0f} | {start + played:.1f} |")
            lines.append("")
        return lines

    def header(self) -> list[str]:
        env = self.env
        lines = [
            f"# Qwen3-TTS decode benchmark — {env.get('gpu', 'unknown GPU')}",
            "",
            f"- GPU: {env.get('gpu')} ({env.get('sms')} SMs, {fmt(env.get('gpu_memory_gib'), 1)} GiB); "
            f"torch {env.get('torch')} (CUDA {env.get('cuda')}), Python {env.get('python')}; "
            f"run of {env.get('date_utc')} (UTC).",
        ]
        if self.gbps:
            lines.append(f"- Memory bandwidth measured in this run (4 GiB device-to-device copy, read + write): "
                         f"{self.gbps / 1000:.2f} TB/s.")
        stacks = {data["label"]: data["versions"] for data in self.results.values() if data.get("versions")}
        for label, versions in sorted(stacks.items()):
            lines.append(f"- {label}: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())) + ".")
        lines += [
            "- Workload: synthetic checkpoints (random weights, exact architecture, CustomVoice, speaker ryan, "
            "English), bf16, batch 1, the same ~20-word text, sampling with the checkpoint defaults "
            "(temperature 0.9, top-k 50, top-p 1, repetition penalty 1.05, sub-talker sampling).",
            "- EOS blocked the same way everywhere: min-new-tokens = max-new-tokens, so EOS is masked until the "
            "requested frame count; every system produced exactly the frames asked for (checked).",
            "- ms/frame = (t(long) − t(short)) / (long − short frames) of code generation without codec decoding "
            "(prefill cancels out); 'incl. prefill' = t(long) / long. RTF = audio seconds / wall seconds with the "
            "codec decoding. Peak GPU memory = torch.cuda.max_memory_allocated over the whole process, loading "
            "included.",
        ]
        return lines

    def markdown(self, extra_notes: list[str] = ()) -> str:
        sections = [
            self.header(),
            ["", "## Targets", ""],
            self.targets(),
            ["", "## ms per frame (talker + 15 predictor steps + sampling)", ""],
            self.per_frame_table(),
            ["", "## Latency, RTF, memory, capture", ""],
            self.latency_table(),
            ["", "## Jetson AGX Orin projection", ""],
            self.orin_projection(),
            ["", "## Notes", ""],
            NOTES + list(extra_notes),
            ["", "## Streaming schedule", ""],
            self.chunk_times(),
        ]
        return "\n".join(line for section in sections for line in section) + "\n"

    def table(self) -> str:
        rows = [f"{'system':14} {'size':5} {'ms/frame':>9} {'RTF':>6} {'sRTF':>6} {'TTFA2':>7} {'peakGiB':>8}"]
        for size in self.sizes:
            for system in self.systems:
                data = self.get(system, size)
                if data is None:
                    continue
                first = (data.get("first_audio_ms") or {}).get("chunk_2")
                stream = data.get("streaming") or {}
                rtf = (data.get("non_streaming") or {}).get("rtf")
                rows.append(
                    f"{system:14} {size:5} {data['ms_per_frame']:9.2f} {fmt(rtf, 2):>6} "
                    f"{fmt(stream.get('rtf'), 1):>6} {fmt(first, 1):>7} "
                    f"{fmt(data['memory'].get('peak_allocated_gib'), 2):>8}"
                )
        if self.gbps:
            rows.append(f"bandwidth {self.gbps / 1000:.2f} TB/s")
        return "\n".join(rows)


def default_out(summary: Summary) -> Path:
    date = (summary.env.get("date_utc") or "undated")[:10]
    gpu = summary.env.get("gpu", "gpu").lower()
    tag = next((name for name in ("h100", "h200", "a100", "l4", "orin") if name in gpu), "gpu")
    return Path(__file__).resolve().parent / "results" / f"{date}-{tag}.md"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, type=Path, help="folder of the run's JSON files")
    parser.add_argument("--out", type=Path, help="markdown file (default bench/results/<date>-<gpu>.md)")
    parser.add_argument("--table-only", action="store_true", help="print a short table instead of writing markdown")
    parser.add_argument("--notes", type=Path, help="markdown lines appended to the Notes section (about this run)")
    args = parser.parse_args()
    summary = Summary(*load(args.json))
    if args.table_only:
        print(summary.table())
        return
    out = args.out or default_out(summary)
    notes = args.notes.read_text().splitlines() if args.notes else []
    out.write_text(summary.markdown(notes))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""The parity tests' reference side: the official ``qwen_tts`` generate for a list of jobs, codes and waveforms out.

Runs in-process where ``qwen_tts`` imports (the transformers 4.57.3 stack), or as a script in the reference venv
(``python tests/reference_side.py JOBS.json OUT.npz``, the transformers 5 stack); both take the same path through
``run_jobs``. A job: ``{"name", "checkpoint", "method" (generate_custom_voice | generate_voice_design |
generate_voice_clone), "kwargs", "clone": {"ref_text", "xvec_only"} (voice clone), "boost_eos" (push the EOS logit
up)}``. Results: ``<name>.codes`` [T, 16] (what the reference's model.generate made) and ``<name>.wav``.
"""

from __future__ import annotations

import json
import sys

import numpy as np

GREEDY = dict(do_sample=False, subtalker_dosample=False)


def reference_audio() -> tuple[np.ndarray, int]:
    """1.2 s of a gliding tone with noise at 16 kHz (exercises the resampling to 24 kHz)."""
    rng = np.random.default_rng(0)
    t = np.arange(int(1.2 * 16000)) / 16000
    wav = 0.3 * np.sin(2 * np.pi * (200 + 150 * t) * t) + 0.02 * rng.standard_normal(t.shape)
    return wav.astype(np.float32), 16000


def boost_eos(head, eos: int) -> None:
    """Make EOS win every greedy pick it is allowed in (both sides apply this to their own copy)."""
    head[eos] = 50 * head.abs().max()


def _run_job(model, job: dict) -> tuple[np.ndarray, np.ndarray]:
    import torch

    kwargs = dict(job["kwargs"], **GREEDY)
    if "clone" in job:
        clone = job["clone"]
        kwargs["voice_clone_prompt"] = model.create_voice_clone_prompt(
            ref_audio=reference_audio(), ref_text=clone["ref_text"], x_vector_only_mode=clone["xvec_only"])
    captured = []
    generate = model.model.generate

    def spy(*args, **kw):
        out = generate(*args, **kw)
        captured.append(out[0][0].cpu())
        return out

    head = model.model.talker.codec_head.weight.data
    saved = head.clone()
    model.model.generate = spy
    try:
        if job.get("boost_eos"):
            boost_eos(head, model.model.config.talker_config.codec_eos_token_id)
        with torch.no_grad():
            wavs, rate = getattr(model, job["method"])(**kwargs)
    finally:
        del model.model.generate  # back to the class method
        head.copy_(saved)
    assert rate == 24000 and len(captured) == 1
    return captured[0].numpy(), np.asarray(wavs[0], dtype=np.float32)


def run_jobs(jobs: list[dict]) -> dict[str, np.ndarray]:
    import torch

    import patches

    patches.apply()  # qwen_tts imports torchaudio
    from qwen_tts import Qwen3TTSModel

    torch.set_num_threads(2)
    models, results = {}, {}
    for job in jobs:
        path = job["checkpoint"]
        if path not in models:
            models[path] = Qwen3TTSModel.from_pretrained(path, device_map="cpu", dtype=torch.float32)
        results[f"{job['name']}.codes"], results[f"{job['name']}.wav"] = _run_job(models[path], job)
    return results


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as f:
        outputs = run_jobs(json.load(f))
    np.savez(sys.argv[2], **outputs)

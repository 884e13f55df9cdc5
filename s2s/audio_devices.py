"""Sound devices through sounddevice (PortAudio): import it once, pick devices by name or index.

Device names on a Jetson (and USB card indexes after a replug) change, so a device is chosen by a case-insensitive
substring of its name, or by index for a quick test; "" means the system default. Without PortAudio or without
any device, the error says how to run headless.
"""

from __future__ import annotations

import logging
from types import ModuleType

log = logging.getLogger(__name__)

HEADLESS_HINT = (
    "run headless instead: `s2s run --input question.wav --output reply.wav` "
    "(or --text \"...\" instead of --input)"
)


class AudioDeviceError(RuntimeError):
    """No usable sound device (PortAudio missing, no device, or no device matches the config)."""


def import_sounddevice() -> ModuleType:
    """The sounddevice module, or AudioDeviceError when the PortAudio library is missing."""
    try:
        import sounddevice
    except OSError as exc:  # the Linux wheel does not bundle libportaudio
        raise AudioDeviceError(
            f"PortAudio is not available ({exc}); install it (`sudo apt-get install libportaudio2`) or {HEADLESS_HINT}"
        ) from None
    return sounddevice


def list_devices() -> list[dict]:
    """Every device sounddevice reports, as dicts with index, name, max_input_channels, max_output_channels,
    default_samplerate. Empty when PortAudio is missing."""
    try:
        sd = import_sounddevice()
    except AudioDeviceError:
        return []
    return [dict(device, index=i) for i, device in enumerate(sd.query_devices())]


def find_device(spec: str, kind: str, devices: list[dict] | None = None) -> dict:
    """The device for ``spec`` ("" = default, a digit string = index, else a name substring); ``kind`` is
    "input" or "output". Raises AudioDeviceError naming the devices there are."""
    assert kind in ("input", "output"), kind
    devices = list_devices() if devices is None else devices
    channels = f"max_{kind}_channels"
    usable = [d for d in devices if d.get(channels, 0) > 0]
    if not usable:
        raise AudioDeviceError(f"no audio {kind} device found; {HEADLESS_HINT}")
    spec = spec.strip()
    if not spec:
        return _default_device(kind, usable)
    if spec.isdigit():
        matches = [d for d in usable if d["index"] == int(spec)]
    else:
        matches = [d for d in usable if spec.lower() in d["name"].lower()]
    if not matches:
        names = "; ".join(f"{d['index']}: {d['name']}" for d in usable)
        section = "audio_in" if kind == "input" else "audio_out"
        raise AudioDeviceError(f"no {kind} device matches {section}.device={spec!r}; {kind} devices: {names}")
    if len(matches) > 1:
        log.info("%d %s devices match %r; using %s", len(matches), kind, spec, matches[0]["name"])
    return matches[0]


def _default_device(kind: str, usable: list[dict]) -> dict:
    sd = import_sounddevice()
    index = sd.default.device[0 if kind == "input" else 1]
    for device in usable:
        if device["index"] == index:
            return device
    log.info("no default %s device is set; using %s", kind, usable[0]["name"])
    return usable[0]

"""Whisper in plain torch, for a GPU that CTranslate2 cannot use (a Jetson's aarch64 wheels are CPU-only; PyPI's
x86_64 wheels need CUDA 12): the weights of a faster-whisper (CTranslate2) model folder, greedy decoding.

``ct2_weights``: the model.bin reader. ``model``: the encoder/decoder. ``transcriber``: audio -> text with the
faster-whisper call shape the STT stage uses (``handlers.stt_whisper_torch``).
"""

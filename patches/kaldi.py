"""Pure-torch Kaldi features with torchaudio's numerics (``torchaudio.compliance.kaldi``). Work in progress."""

__all__ = ["fbank"]


def fbank(*args, **kwargs):
    raise NotImplementedError("patches.kaldi.fbank is being written")

"""Talker prompts for the three model kinds; they share one decode loop and differ only here.

A prompt is the prefill embedding sequence [1, T, D] plus the "trailing text" rows [1, Tt, D] that are added to
the talker input one per generated frame (then ``tts_pad``). The rows are built exactly as the reference
``Qwen3TTSForConditionalGeneration.generate`` builds them (same token slices, same groupings of the text
projection calls, so fp32 results match bit for bit):

  [instruct rows]  "<|im_start|>user\\n{instruct}<|im_end|>\\n" through the text projection (VoiceDesign, 1.7B CustomVoice)
  role rows        "<|im_start|>assistant\\n" (3 tokens)
  tag rows         tts_pad + codec [think, think_bos, language, think_eos] (or [nothink, think_bos, think_eos] for
                   "auto"), then the speaker row (CustomVoice speaker id / voice-clone x-vector), then tts_bos + codec pad
  text start       first text token + codec bos   (streaming text input: the other text tokens trail)
                   or all text tokens + tts_eos over codec pad, then tts_pad + codec bos (non-streaming text input)
  voice clone ICL  reference text + target text + tts_eos against codec bos + summed reference codes
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from s2s.qwen3_tts.voice import VoicePrompt
from s2s.qwen3_tts.weights import TalkerWeights, embed_codes


@dataclass
class TalkerPrompt:
    embeds: torch.Tensor  # [1, T, D] prefill rows
    trailing: torch.Tensor  # [1, Tt, D] text rows added to the talker input frame by frame
    tts_pad: torch.Tensor  # [1, 1, D] added once the trailing rows are used up
    text_tokens: int
    """Number of target-text tokens (sets the default frame budget)."""
    context_codes: torch.Tensor | None = None
    """Voice-clone reference codes [R, 16]: decoder context, not part of the output."""

    @property
    def length(self) -> int:
        return self.embeds.shape[1]


def _chat(role: str, text: str, open_assistant: bool = False) -> str:
    turn = f"<|im_start|>{role}\n{text}<|im_end|>\n"
    return turn + "<|im_start|>assistant\n" if open_assistant else turn


class PromptBuilder:
    """Builds ``TalkerPrompt``s from text with the checkpoint's tokenizer and the engine's embedding weights."""

    def __init__(self, talker: TalkerWeights, config, tokenizer, device: torch.device):
        self.w = talker
        self.cfg = config  # Qwen3TTSConfig
        self.tcfg = config.talker_config
        self.tokenizer = tokenizer
        self.device = device

    # -- embedding helpers ------------------------------------------------------------------------------------
    def _ids(self, text: str) -> torch.Tensor:
        ids = self.tokenizer(text=text, return_tensors="pt", padding=True)["input_ids"]
        return ids.view(1, -1).to(self.device)  # [1, n]

    def _text(self, ids: torch.Tensor) -> torch.Tensor:
        """Text ids [1, n] -> projected rows [1, n, D] (text embedding -> fc1 -> SiLU -> fc2)."""
        h = F.embedding(ids, self.w.text_embedding)  # [1, n, text_hidden]
        h = F.silu(F.linear(h, self.w.text_fc1_w, self.w.text_fc1_b))
        return F.linear(h, self.w.text_fc2_w, self.w.text_fc2_b)  # [1, n, D]

    def _codec(self, ids: list[int]) -> torch.Tensor:
        """Codec control ids -> talker codec embedding rows [1, n, D]."""
        return F.embedding(torch.tensor([ids], device=self.device), self.w.codec_embedding)

    # -- validation -------------------------------------------------------------------------------------------
    def languages(self) -> list[str]:
        return ["auto"] + [k for k in self.tcfg.codec_language_id if "dialect" not in k]

    def speakers(self) -> list[str]:
        return sorted(self.tcfg.spk_id or {})

    def _language_id(self, language: str, speaker: str | None) -> int | None:
        lang = language.lower()
        if lang not in self.languages():
            raise ValueError(f"language {language!r} is not supported; use one of {self.languages()}")
        lang_id = None if lang == "auto" else self.tcfg.codec_language_id[lang]
        if speaker and lang in ("chinese", "auto"):
            dialect = self.tcfg.spk_is_dialect[speaker]
            if dialect is not False:
                lang_id = self.tcfg.codec_language_id[dialect]  # dialect speakers speak their dialect
        return lang_id

    # -- the prompt -------------------------------------------------------------------------------------------
    def build(
        self,
        text: str,
        language: str,
        *,
        speaker: str | None = None,
        instruct: str | None = None,
        voice: VoicePrompt | None = None,
        non_streaming_mode: bool,
    ) -> TalkerPrompt:
        if not text:
            raise ValueError("text is empty: give the sentence to speak")
        if speaker is not None:
            speaker = speaker.lower()
            if speaker not in (self.tcfg.spk_id or {}):
                raise ValueError(f"speaker {speaker!r} is not in this checkpoint; use one of {self.speakers()}")
        lang_id = self._language_id(language, speaker)
        input_id = self._ids(_chat("assistant", text, open_assistant=True))  # [1, n]
        rows = []
        if instruct:
            rows.append(self._text(self._ids(_chat("user", instruct))))

        speaker_row = None
        if speaker is not None:
            spk = torch.tensor(self.tcfg.spk_id[speaker], device=self.device)
            speaker_row = F.embedding(spk, self.w.codec_embedding).view(1, 1, -1)  # [1, 1, D]
        elif voice is not None:
            speaker_row = voice.speaker_embedding.to(self.device, self.w.codec_embedding.dtype).view(1, 1, -1)

        specials = torch.tensor([[self.cfg.tts_bos_token_id, self.cfg.tts_eos_token_id, self.cfg.tts_pad_token_id]],
                                device=self.device)
        tts_bos, tts_eos, tts_pad = self._text(specials).chunk(3, dim=1)  # 3 x [1, 1, D]

        t = self.tcfg
        tags = [t.codec_nothink_id, t.codec_think_bos_id, t.codec_think_eos_id] if lang_id is None else \
            [t.codec_think_id, t.codec_think_bos_id, lang_id, t.codec_think_eos_id]
        codec = [self._codec(tags)] + ([speaker_row] if speaker_row is not None else []) + \
            [self._codec([t.codec_pad_id, t.codec_bos_id])]
        codec = torch.cat(codec, dim=1)  # [1, n_codec, D]

        role = self._text(input_id[:, :3])  # [1, 3, D]
        tag_rows = torch.cat((tts_pad.expand(-1, codec.shape[1] - 2, -1), tts_bos), dim=1) + codec[:, :-1]
        embeds = torch.cat((role, tag_rows), dim=1)

        context = None
        if voice is not None and voice.ref_codes is not None:
            context = voice.ref_codes.to(self.device)
            ref_id = self._ids(_chat("assistant", voice.ref_text))
            icl, trailing = self._icl(input_id[:, 3:-5], ref_id[:, 3:-2], context, tts_pad, tts_eos, non_streaming_mode)
            embeds = torch.cat((embeds, icl), dim=1)
        else:
            embeds = torch.cat((embeds, self._text(input_id[:, 3:4]) + codec[:, -1:]), dim=1)
            if non_streaming_mode:
                body = input_id[:, 3:-5]
                all_text = torch.cat((self._text(body), tts_eos), dim=1) + self._codec([t.codec_pad_id] * (body.shape[1] + 1))
                embeds = torch.cat((embeds[:, :-1], all_text, tts_pad + self._codec([t.codec_bos_id])), dim=1)
                trailing = tts_pad
            else:
                trailing = torch.cat((self._text(input_id[:, 4:-5]), tts_eos), dim=1)
        rows.append(embeds)
        return TalkerPrompt(torch.cat(rows, dim=1), trailing, tts_pad, int(input_id.shape[1]) - 8, context)

    def _icl(self, text_id, ref_id, ref_codes, tts_pad, tts_eos, non_streaming_mode):
        """Voice-clone in-context rows: (ref text + text + eos) against (codec bos + summed reference codes)."""
        text = torch.cat((self._text(torch.cat((ref_id, text_id), dim=-1)), tts_eos), dim=1)  # [1, Tt, D]
        codes = torch.cat((self._codec([self.tcfg.codec_bos_id]), embed_codes(ref_codes, self.w).unsqueeze(0)), dim=1)  # [1, Tc, D]
        n_text, n_codec = text.shape[1], codes.shape[1]
        if non_streaming_mode:
            rows = text + self._codec([self.tcfg.codec_pad_id] * n_text)
            return torch.cat((rows, codes + tts_pad), dim=1), tts_pad
        if n_text > n_codec:
            return text[:, :n_codec] + codes, text[:, n_codec:]
        text = torch.cat([text] + [tts_pad] * (n_codec - n_text), dim=1)
        return text + codes, tts_pad

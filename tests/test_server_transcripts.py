"""Transcription response formats: json, text, verbose_json (segments, words), srt and vtt times."""

from __future__ import annotations

from s2s.server.transcripts import Segment, Transcription, Word, render

RESULT = Transcription("Hello there. General Kenobi.", "en", 3725.5, (
    Segment(0, 0.0, 1.25, "Hello there.", words=(Word(" Hello", 0.0, 0.5), Word(" there.", 0.5, 1.25))),
    Segment(1, 3723.5, 3725.4567, "General Kenobi.")))


def test_json_and_text():
    assert render(RESULT, "json") == ({"text": "Hello there. General Kenobi."}, "application/json")
    assert render(RESULT, "text")[0] == "Hello there. General Kenobi.\n"


def test_verbose_json_names_the_language_and_gives_times():
    body, _ = render(RESULT, "verbose_json", words=True)
    assert (body["task"], body["language"], body["duration"]) == ("transcribe", "english", 3725.5)
    assert [s["end"] for s in body["segments"]] == [1.25, 3725.457]
    assert body["words"][1] == {"word": " there.", "start": 0.5, "end": 1.25}
    assert "words" not in render(RESULT, "verbose_json")[0]


def test_srt_and_vtt():
    srt, _ = render(RESULT, "srt")
    assert srt == ("1\n00:00:00,000 --> 00:00:01,250\nHello there.\n\n"
                   "2\n01:02:03,500 --> 01:02:05,457\nGeneral Kenobi.\n")
    vtt, media_type = render(RESULT, "vtt")
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.250\nHello there.\n")
    assert media_type.startswith("text/vtt")

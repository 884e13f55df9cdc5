"""TextChunker: where streamed text is cut, what cleaning removes, and the tail flush."""

import pytest

from s2s.text_chunker import TextChunker, clean_for_speech


def chunk_stream(text: str, step: int = 1, min_chunk_chars: int = 12) -> tuple[list[str], list[str]]:
    """(chunks returned while streaming ``text`` in pieces of ``step`` characters, chunks from the flush)."""
    chunker = TextChunker(min_chunk_chars)
    streamed = []
    for i in range(0, len(text), step):
        streamed += chunker(text[i:i + step])
    return streamed, chunker.flush()


@pytest.mark.parametrize("step", [1, 3, 1000])
def test_sentences_are_cut_as_soon_as_the_next_character_arrives(step):
    streamed, tail = chunk_stream("It is sunny. Take a hat! Why not? Bye", step)
    assert streamed == ["It is sunny.", "Take a hat!", "Why not?"]
    assert tail == ["Bye"]


def test_a_sentence_end_waits_for_the_next_character():
    chunker = TextChunker()
    assert chunker("The answer is 3.") == []  # could still become "3.5"
    assert chunker(" Next") == ["The answer is 3."]


def test_clauses_are_cut_only_once_long_enough():
    streamed, tail = chunk_stream("Yes, of course, the capital of France is Paris; it is big: very big.")
    assert streamed == ["Yes, of course,", "the capital of France is Paris;"]  # "Yes," and "it is big:" are short
    assert tail == ["it is big: very big."]


def test_short_clauses_are_joined_to_the_next():
    streamed, tail = chunk_stream("Hi, you, there, friend.", min_chunk_chars=30)
    assert streamed == [] and tail == ["Hi, you, there, friend."]


@pytest.mark.parametrize("text", [
    "Dr. Smith lives on Baker St. near the park.",
    "It costs 3.5 dollars, or 1,000 cents in total.",
    "Use tools e.g. a hammer and J. R. R. Tolkien books.",
    "We met at 10:30 in the U.S. embassy.",
])
def test_abbreviations_initials_and_numbers_are_not_cut(text):
    streamed, tail = chunk_stream(text, min_chunk_chars=100)
    assert streamed + tail == [text]


def test_markdown_is_removed():
    text = ("## Facts\n"
            "1. **Paris** is the *capital*.\n"
            "- It has the [Eiffel Tower, a landmark](https://example.com/tower).\n"
            "> Use `pip` to install __it__.\n"
            "```python\nprint(1)\n```\n"
            "---\n")
    streamed, tail = chunk_stream(text, step=4)
    assert streamed + tail == ["Facts", "Paris is the capital.", "It has the Eiffel Tower, a landmark.",
                               "Use pip to install it.", "print(1)"]


def test_no_cut_inside_a_link():
    streamed, _ = chunk_stream("See [Paris, France, the city](https://x.org/a,b) for more. Ok", min_chunk_chars=1)
    assert streamed == ["See Paris, France, the city for more."]


def test_emoji_and_symbols_are_removed_but_words_kept():
    assert clean_for_speech("Great job 🎉👍🏽! It is 20°C ☀️ today.") == "Great job! It is 20°C today."
    assert clean_for_speech("snake_case stays, _emphasis_ goes") == "snake_case stays, emphasis goes"
    assert clean_for_speech("Read https://example.com/a/b now") == "Read example.com now"


def test_cjk_punctuation_cuts_without_a_space():
    streamed, tail = chunk_stream("你好，世界。我们走吧！", min_chunk_chars=1)
    assert streamed == ["你好，", "世界。", "我们走吧！"] and tail == []


@pytest.mark.parametrize("text", ["", "   ", "\n\n", "🎉🎉", "**", "...", "- \n# \n"])
def test_nothing_speakable_gives_no_chunk(text):
    streamed, tail = chunk_stream(text)
    assert streamed == [] and tail == []


def test_flush_resets_the_chunker():
    chunker = TextChunker()
    chunker("An unfinished thought")
    assert chunker.flush() == ["An unfinished thought"]
    assert chunker.flush() == []
    chunker("Stale text")
    chunker.reset()
    assert chunker("New one. ") == ["New one."]

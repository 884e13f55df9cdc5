"""TextChunker: where streamed text is cut, what cleaning removes, and the tail flush."""

import pytest

from s2s.text_chunker import TextChunker, clean_for_speech


def chunk_stream(text: str, step: int = 1, min_chunk_chars: int = 12,
                 first_chunk_words: int = 0) -> tuple[list[str], list[str]]:
    """(chunks returned while streaming ``text`` in pieces of ``step`` characters, chunks from the flush)."""
    chunker = TextChunker(min_chunk_chars, first_chunk_words)
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


# ---- the first chunk of a reply ----------------------------------------------------------------------------------
@pytest.mark.parametrize("step", [1, 4, 1000])
def test_the_first_chunk_is_cut_after_n_words_when_no_clause_ended_sooner(step):
    text = "The weather in Berlin today is mostly sunny with a light breeze from the west and no rain at all."
    streamed, tail = chunk_stream(text, step, first_chunk_words=6)
    assert streamed == ["The weather in Berlin today is"]  # the word count applies to the first chunk only
    assert tail == ["mostly sunny with a light breeze from the west and no rain at all."]


def test_a_clause_or_sentence_end_before_n_words_comes_first():
    assert chunk_stream("The capital of France, as you know, is Paris. ", first_chunk_words=8)[0] == [
        "The capital of France,", "as you know,", "is Paris."]
    streamed, _ = chunk_stream("Paris is lovely. It is a big city with many people living in it today ",
                               first_chunk_words=4)
    assert streamed == ["Paris is lovely."]  # a short first sentence spends the word rule; the rest waits


def test_the_nth_word_ends_only_at_the_following_space():
    chunker = TextChunker(12, first_chunk_words=3)
    assert chunker("One two thr") == []
    assert chunker("ee") == []  # "three" may still go on
    assert chunker(" four") == ["One two three"]


def test_the_word_rule_never_cuts_inside_a_link_or_code_and_starts_again_after_a_flush():
    streamed, _ = chunk_stream("See [the big red house on the hill](http://x.org/a) for `a b c d e` now, ok ",
                               first_chunk_words=3)
    assert streamed[0] == "See the big red house on the hill for"  # the link counts as one word
    chunker = TextChunker(12, first_chunk_words=2)
    assert chunker("Hello there you ") == ["Hello there"]
    assert chunker("and more words here ") == []
    chunker.flush()
    assert chunker("Next reply starts ") == ["Next reply"]


def test_zero_words_keeps_clause_and_sentence_cuts_only():
    assert chunk_stream("one two three four five six seven eight nine ten ", first_chunk_words=0)[0] == []

from hypothesis import given
from hypothesis import strategies as st

from sentiment.errors import SentimentError
from sentiment.text.tokenize import basic, get_tokenizer, words


def test_basic_is_the_reference_split():
    assert basic("This  Movie\nwas GREAT.<br />") == ["this", "", "moviewas", "great.<br", "/>"]


def test_words_strips_breaks_and_splits_punctuation():
    assert words("Great film.<br /><br />Loved it!<BR>The end") == [
        "great",
        "film",
        ".",
        "loved",
        "it",
        "!",
        "the",
        "end",
    ]


def test_words_keeps_contractions_as_glove_tokens():
    assert words("I don't think it's bad, can't wait; they'll see. I'm sure") == [
        "i",
        "do",
        "n't",
        "think",
        "it",
        "'s",
        "bad",
        ",",
        "ca",
        "n't",
        "wait",
        ";",
        "they",
        "'ll",
        "see",
        ".",
        "i",
        "'m",
        "sure",
    ]
    assert words("It\u2019s fine") == ["it", "'s", "fine"]


def test_words_unicode_and_numbers():
    assert words("Café NAÏVE, Ünïcödé 7/10... 3.5 stars -- wow!!!") == [
        "café",
        "naïve",
        ",",
        "ünïcödé",
        "7/10",
        "...",
        "3.5",
        "stars",
        "--",
        "wow",
        "!!!",
    ]


def test_words_empty_and_whitespace():
    assert words("") == []
    assert words("  \n\t ") == []


@given(st.text())
def test_tokenizers_never_fail_and_emit_no_whitespace(text):
    for tok in words(text):
        assert tok and not any(ch.isspace() for ch in tok)
    assert "\n" not in "".join(basic(text))


def test_unknown_tokenizer_is_a_user_error():
    try:
        get_tokenizer("nope")
    except SentimentError as e:
        assert "basic" in str(e) and "words" in str(e)
    else:
        raise AssertionError("expected SentimentError")

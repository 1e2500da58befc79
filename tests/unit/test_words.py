"""The words a message is indexed by and a search asks for."""

import pytest

from chatpulse.words import MAX_WORD_CHARS, query_words, words_of


def test_words_are_case_folded_split_on_punctuation_and_kept_once() -> None:
    assert words_of("KEKW kekw, GG! don't Straße 日本語 x_y") == [
        "kekw",
        "gg",
        "don",
        "t",
        "strasse",
        "日本語",
        "x_y",
    ]


def test_long_runs_are_not_indexed_and_a_message_has_at_most_the_bound() -> None:
    assert words_of("a" * (MAX_WORD_CHARS + 1) + " ok " + "b" * MAX_WORD_CHARS) == [
        "ok",
        "b" * MAX_WORD_CHARS,
    ]
    assert words_of(" ".join(f"w{i}" for i in range(100))) == [f"w{i}" for i in range(64)]


def test_a_query_asks_for_the_words_the_message_is_indexed_by() -> None:
    assert query_words("  PogChamp   pogchamp LUL ") == ["pogchamp", "lul"]
    assert set(query_words("Straße")) <= set(words_of("STRASSE is a street"))


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("", "no word"),
        ("!!! ...", "no word"),
        ("a b c d e f", "6 words"),
        ("x" * 41, "longer than 40"),
        ("y " * 101, "longer than 200"),
    ],
)
def test_bad_queries_say_what_is_wrong(query: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        query_words(query)

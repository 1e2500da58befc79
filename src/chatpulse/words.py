"""The words of a chat message, as the search index keeps them and a search asks for them.

Cassandra 5.0's Storage-Attached Index has no analyzers (``index_analyzer`` and the ``:``
operator came after 5.0: 5.0.8 refuses both), so the analysis is done here, once for the
processor (which stores each message's words in ``messages_bucketed.words``, a set indexed by
SAI) and once for the API (which asks ``words CONTAINS ?`` once per word of the query). Both
use :func:`words_of`, so a query word matches exactly the stored words it should:
- a word is a run of Unicode letters, digits or ``_`` (``\\w+``), so punctuation splits words
  ("gg!" is "gg", "don't" is "don" and "t");
- case-folded (``KEKW`` and ``kekw`` are one word, as are ``Straße`` and ``STRASSE``);
- at most :data:`MAX_WORD_CHARS` characters: a longer run is not indexed (nobody searches
  for one);
- at most :data:`MAX_WORDS_PER_MESSAGE` distinct words of a message are indexed (its first
  ones): a Twitch message has at most 500 characters, so this bounds the index rows of a
  message.
"""

import re

__all__ = [
    "MAX_QUERY_CHARS",
    "MAX_QUERY_WORDS",
    "MAX_WORDS_PER_MESSAGE",
    "MAX_WORD_CHARS",
    "query_words",
    "words_of",
]

MAX_WORD_CHARS = 40
MAX_WORDS_PER_MESSAGE = 64
# a search (the API's ``q``): at most this long, at most this many words
MAX_QUERY_CHARS = 200
MAX_QUERY_WORDS = 5

_WORD = re.compile(r"\w+")


def words_of(text: str, limit: int = MAX_WORDS_PER_MESSAGE) -> list[str]:
    """The distinct indexed words of ``text`` in order of first appearance, at most ``limit``."""
    found: dict[str, None] = {}
    for word in _WORD.findall(text.casefold()):
        if len(word) <= MAX_WORD_CHARS:
            found[word] = None
            if len(found) >= limit:
                break
    return list(found)


def query_words(query: str) -> list[str]:
    """The distinct words a search for ``query`` asks for; ValueError saying what is wrong
    when it has none, more than :data:`MAX_QUERY_WORDS`, or one that is never indexed."""
    if len(query) > MAX_QUERY_CHARS:
        raise ValueError(f"q is longer than {MAX_QUERY_CHARS} characters")
    runs = _WORD.findall(query.casefold())
    if not runs:
        raise ValueError("q has no word to search for (letters, digits or _)")
    long = next((run for run in runs if len(run) > MAX_WORD_CHARS), None)
    if long is not None:
        raise ValueError(
            f"q has a word longer than {MAX_WORD_CHARS} characters ({long[:20]}...), "
            "which is never indexed"
        )
    words = list(dict.fromkeys(runs))
    if len(words) > MAX_QUERY_WORDS:
        raise ValueError(f"q has {len(words)} words; at most {MAX_QUERY_WORDS} are searched for")
    return words

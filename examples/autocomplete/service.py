"""Prefix completion ranked by frequency, independent of any web framework.

`Completer` reads the English frequency list that symspellpy ships (82,834
words with their counts in a large web corpus, the same list examples/spellcheck
corrects against) into a `marisa_trie.Trie`, a compact static prefix index.
`complete(prefix, k)` returns the k most frequent words starting with the
prefix (ties: alphabetical).

A prefix such as "s" has thousands of completions; ranking them per request
would cost milliseconds. So at start-up, every prefix with more than
`PRECOMPUTED_ABOVE` completions gets its top `MAX_K` words computed once (a
few thousand prefixes); every other prefix enumerates at most that many keys
from the trie and sorts them.
"""

import importlib.resources
import time
from typing import Any, Sequence

import marisa_trie  # type: ignore[import-not-found]

MAX_K = 50
MAX_PREFIX_CHARS = 50
PRECOMPUTED_ABOVE = 64


class BadQuery(ValueError):
    """A request the service refuses: a 400."""


def read_frequency_list() -> list[tuple[str, int]]:
    """(word, count) pairs of symspellpy's English frequency dictionary."""
    path = importlib.resources.files("symspellpy") / "frequency_dictionary_en_82_765.txt"
    pairs: list[tuple[str, int]] = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2:
                pairs.append((parts[0], int(parts[1])))
    return pairs


class Completer:
    def __init__(self) -> None:
        started = time.perf_counter()
        pairs = read_frequency_list()
        # Most frequent first, then alphabetical: the order answers are given in.
        pairs.sort(key=lambda p: (-p[1], p[0]))
        self.count = dict(pairs)
        self.trie = marisa_trie.Trie(self.count)
        ranked = [w for w, _ in pairs]
        completions: dict[str, int] = {}
        for w in ranked:
            for i in range(1, len(w) + 1):
                p = w[:i]
                completions[p] = completions.get(p, 0) + 1
        lists: dict[str, list[str]] = {p: [] for p, n in completions.items() if n > PRECOMPUTED_ABOVE}
        for w in ranked:
            for i in range(1, len(w) + 1):
                top = lists.get(w[:i])
                if top is not None and len(top) < MAX_K:
                    top.append(w)
        self.top: dict[str, tuple[str, ...]] = {p: tuple(ws) for p, ws in lists.items()}
        self.words = len(ranked)
        self.load_seconds = time.perf_counter() - started

    def complete(self, prefix: str, k: int = 10) -> dict[str, Any]:
        """{"prefix", "completions": [{"word", "count"}]}: the k most frequent
        words that start with `prefix` (lower-cased), most frequent first."""
        prefix = prefix.strip().lower()
        if not prefix:
            raise BadQuery("empty prefix: give it as prefix=...")
        if len(prefix) > MAX_PREFIX_CHARS:
            raise BadQuery(f"prefix longer than {MAX_PREFIX_CHARS} characters")
        if not 1 <= k <= MAX_K:
            raise BadQuery(f"k must be between 1 and {MAX_K}")
        words: Sequence[str] | None = self.top.get(prefix)
        if words is None:
            count = self.count
            words = sorted(self.trie.keys(prefix), key=lambda w: (-count[w], w))
        return {
            "prefix": prefix,
            "completions": [{"word": w, "count": self.count[w]} for w in words[:k]],
        }

"""The spell-checking service, independent of any web framework.

`SpellService` loads symspellpy's English frequency dictionary (82,834 words,
shipped inside the symspellpy package) and its bigram dictionary once, with a
maximum edit distance of 2, and answers corrections from memory. pyrs serves
it through main.py; benches/services/ puts the same class behind Flask,
Granian (WSGI) and Tornado for comparison.
"""

import importlib.resources
import time
from typing import Any

from symspellpy import SymSpell, Verbosity  # type: ignore[import-untyped]

MAX_EDIT_DISTANCE = 2
# Longest query accepted (characters). Compound correction costs grow with
# the length of the text, so a bound keeps one request from taking seconds.
MAX_QUERY_CHARS = 200
# Most queries in one batch (POST).
MAX_BATCH = 100
# Most suggestions returned for one word.
MAX_SUGGESTIONS = 10


class BadQuery(ValueError):
    """A query the service refuses (empty, too long, not text): a 400."""


class SpellService:
    def __init__(self) -> None:
        started = time.perf_counter()
        self.sym = SymSpell(max_dictionary_edit_distance=MAX_EDIT_DISTANCE, prefix_length=7)
        data = importlib.resources.files("symspellpy")
        with importlib.resources.as_file(data / "frequency_dictionary_en_82_765.txt") as path:
            if not self.sym.load_dictionary(str(path), term_index=0, count_index=1):
                raise RuntimeError(f"cannot read {path}")
        with importlib.resources.as_file(data / "frequency_bigramdictionary_en_243_342.txt") as path:
            if not self.sym.load_bigram_dictionary(str(path), term_index=0, count_index=2):
                raise RuntimeError(f"cannot read {path}")
        self.words = len(self.sym.words)
        self.load_seconds = time.perf_counter() - started

    def correct(self, query: Any, max_suggestions: int = 5) -> dict[str, Any]:
        """One query: a single word gets its closest dictionary words (word
        mode); several words are corrected as a whole, splitting and joining
        words where that reads better (compound mode).

        Returns {"q", "mode", "correction", "distance", "suggestions": [{"term",
        "distance", "count"}]}; "distance" is None when nothing is within 2 edits.
        """
        if not isinstance(query, str):
            raise BadQuery("a query must be a string")
        text = query.strip()
        if not text:
            raise BadQuery("empty query: give the text to correct as q=...")
        if len(text) > MAX_QUERY_CHARS:
            raise BadQuery(f"query longer than {MAX_QUERY_CHARS} characters")
        if not 1 <= max_suggestions <= MAX_SUGGESTIONS:
            raise BadQuery(f"n must be between 1 and {MAX_SUGGESTIONS}")
        if len(text.split()) == 1:
            mode = "word"
            items = self.sym.lookup(
                text, Verbosity.CLOSEST, max_edit_distance=MAX_EDIT_DISTANCE, transfer_casing=True
            )[:max_suggestions]
        else:
            mode = "compound"
            items = self.sym.lookup_compound(text, max_edit_distance=MAX_EDIT_DISTANCE, transfer_casing=True)
        suggestions: list[dict[str, Any]] = [{"term": s.term, "distance": s.distance, "count": s.count} for s in items]
        best = suggestions[0] if suggestions else None
        return {
            "q": query,
            "mode": mode,
            "correction": best["term"] if best else text,
            "distance": best["distance"] if best else None,
            "suggestions": suggestions,
        }

    def correct_batch(self, queries: Any) -> list[dict[str, Any]]:
        """A list of queries (at most MAX_BATCH) -> a list of `correct` results."""
        if not isinstance(queries, list):
            raise BadQuery('the body must be a JSON list of strings, e.g. ["speling", "whereis th elove"]')
        if len(queries) > MAX_BATCH:
            raise BadQuery(f"at most {MAX_BATCH} queries per batch")
        return [self.correct(q) for q in queries]

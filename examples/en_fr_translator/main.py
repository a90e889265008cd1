"""An offline English-to-French translator served by pyrs.

The word table (words.tsv, shipped next to this file) is loaded once, when pyrs
creates the `Translator` instance at start-up; every request then shares it.
Translation is word by word with a few multi-word phrases ("thank you",
"in summer"): punctuation, spacing and numbers are kept as they are, unknown
words pass through unchanged, capitalisation follows the source (Capitalised,
ALL CAPS, names; "I" and days only at a sentence start), and French elision is applied ("le homme" ->
"l'homme").

Routes (see project.pyrs):
    GET  /translate?q=TEXT      -> text/plain; charset=utf-8
    POST /translate  (body)     -> text/plain; charset=utf-8
    GET/POST /translate.json    -> {"source", "translation", "unknown"}
    anything else               -> usage text (200 for /, 404 otherwise)
"""

import os
import re
from typing import Any

import pyrs

DATA_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "words.tsv")

# Longest English phrase (in words) the table may hold.
MAX_PHRASE = 3

# A word: letters (any script), optionally joined by apostrophes ("don't").
# Splitting on it with a capture group gives [sep, word, sep, word, ..., sep].
WORD = re.compile(r"([^\W\d_]+(?:['\u2019][^\W\d_]+)*)")

# A separator that ends a sentence: the next word starts a new one.
SENTENCE_END = re.compile(r"(?:[.!?\u2026]|\n)\W*$")

# English capitalises these everywhere; French does not, so mid-sentence they
# are written in lower case (the pronoun I, days, months, languages).
ENGLISH_ONLY_CAPITALS = frozenset(
    """i monday tuesday wednesday thursday friday saturday sunday
    january february march april may june july august september october
    november december french english german spanish italian""".split()
)

# French words that lose their last vowel before a vowel or a mute h.
ELIDABLE = frozenset("le la je me te se de ne que".split())
VOWELS = frozenset("aeiouyhàâäéèêëîïôöùûüœæ")

USAGE = """pyrs en_fr_translator: offline English to French, word by word.

  curl 'http://HOST:PORT/translate?q=Where+is+the+boy%3F'
  curl --data-binary 'The boy is very happy in summer.' http://HOST:PORT/translate
  curl --data-binary 'Hello Zorblax' http://HOST:PORT/translate.json

/translate returns text/plain; charset=utf-8. /translate.json returns
{"source": ..., "translation": ..., "unknown": [...]}. Words the table does
not know pass through unchanged (and are listed in "unknown").
"""


def load_table(path: str) -> dict[str, str]:
    """Reads ENGLISH<TAB>FRENCH lines; '#' comments and blank lines are skipped."""
    table: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            parts = line.split("\t")
            if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
                raise ValueError(f"{path}:{number}: expected ENGLISH<TAB>FRENCH, got {line!r}")
            english = " ".join(parts[0].lower().split())
            if len(english.split()) > MAX_PHRASE:
                raise ValueError(f"{path}:{number}: phrases are at most {MAX_PHRASE} words: {english!r}")
            if english in table:
                raise ValueError(f"{path}:{number}: {english!r} is listed twice")
            table[english] = parts[1].strip()
    return table


def match_case(source_words: list[str], french: str, sentence_start: bool) -> str:
    """Gives `french` the capitalisation of the English source words.

    ALL CAPS stays all caps; a capitalised word gives a capitalised translation,
    except the words English alone capitalises (I, days, months, languages),
    which are capitalised only at the start of a sentence; names in the table
    (Paris) keep their capital.
    """
    letters = "".join(source_words)
    if len(letters) > 1 and letters.isupper():
        return french.upper()
    if french[:1].isupper():
        return french  # a name: Paris, France, New York
    first = source_words[0]
    if not first[:1].isupper():
        return french
    if first.lower() in ENGLISH_ONLY_CAPITALS and not sentence_start:
        return french  # "and I" -> "et je", "on Monday" -> "sur lundi"
    return french[:1].upper() + french[1:]


def elide(pieces: list[list[str]]) -> None:
    """Applies French elision in place: ["le", " "], ["homme", ...] -> ["l'", ""], ...

    `pieces` is a list of [text, separator_after] pairs.
    """
    for k in range(len(pieces) - 1):
        text, sep = pieces[k]
        following = pieces[k + 1][0]
        last = text.rsplit(" ", 1)[-1]
        if sep == " " and last.lower() in ELIDABLE and following[:1].lower() in VOWELS:
            pieces[k] = [text[:-1] + "'", ""]


class Translator:
    """Holds the word table; one instance serves every route."""

    def __init__(self) -> None:
        self.table = load_table(DATA_FILE)
        # flush: stdout is a pipe under a supervisor, and this line should
        # show up before "Listening on", not at exit.
        print(f"en_fr_translator: loaded {len(self.table)} entries from {DATA_FILE}", flush=True)

    def translate_text(self, text: str) -> tuple[str, list[str]]:
        """Returns (translation, unknown words in order of first appearance)."""
        parts = WORD.split(text)
        pieces = [["", parts[0]]]  # [text, separator after it]
        unknown: list[str] = []
        sentence_start = True
        i = 1
        while i < len(parts):
            for n in range(min(MAX_PHRASE, (len(parts) - i) // 2), 0, -1):
                words = parts[i : i + 2 * n : 2]
                between = parts[i + 1 : i + 2 * n - 1 : 2]
                if any(s.strip() or not s for s in between):
                    continue  # a phrase's words are separated by spaces only
                french = self.table.get(" ".join(w.lower() for w in words))
                if french is not None:
                    pieces.append([match_case(words, french, sentence_start), parts[i + 2 * n - 1]])
                    i += 2 * n
                    break
            else:
                word = parts[i]
                if word not in unknown:
                    unknown.append(word)
                pieces.append([word, parts[i + 1]])
                i += 2
            sentence_start = bool(SENTENCE_END.search(pieces[-1][1]))
        elide(pieces)
        return "".join(text + sep for text, sep in pieces), unknown

    def _source(self, request: pyrs.Request) -> str:
        if request.method == "GET":
            q = request.query.get("q")
            if q is None:
                raise pyrs.HTTPError(400, "missing the text: GET /translate?q=TEXT or POST it as the body")
            return q
        try:
            return request.body.decode("utf-8")
        except UnicodeDecodeError:
            raise pyrs.HTTPError(400, "the request body must be UTF-8 text")

    def translate(self, request: pyrs.Request) -> str:
        """/translate: the translation as text/plain; charset=utf-8."""
        translation, _ = self.translate_text(self._source(request))
        return translation

    def translate_json(self, request: pyrs.Request) -> dict[str, Any]:
        """/translate.json: {"source", "translation", "unknown"}."""
        source = self._source(request)
        translation, unknown = self.translate_text(source)
        return {"source": source, "translation": translation, "unknown": unknown}

    def usage(self, request: pyrs.Request) -> tuple[str, int]:
        """Every other path: how to use this example."""
        return (USAGE, 200 if request.path == "/" else 404)

"""Product-category classification, independent of any web framework.

`ProductClassifier` trains a scikit-learn pipeline (TF-IDF of word unigrams
and bigrams, then a multinomial logistic regression) at start-up on the 4,000
labelled titles in titles.tsv (made by make_titles.py), then answers from
memory. `classify` returns what the model returns: the category names are
`numpy.str_` items of `classes_` and the probabilities `numpy.float64` items
of `predict_proba`, with no conversion; the server encodes them.
"""

import os
import time
from typing import Any

# One BLAS/OpenMP thread per process: a server runs one process per core, and
# on a busy machine the libraries' spinning thread pools made training 20x
# slower (0.7 s -> 15 s here) and each prediction 4x slower. Set before numpy
# loads its libraries; an explicit setting in the environment wins.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
from sklearn.feature_extraction.text import TfidfVectorizer  # type: ignore[import-untyped]  # noqa: E402
from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]  # noqa: E402
from sklearn.pipeline import make_pipeline  # type: ignore[import-untyped]  # noqa: E402
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = 3
MAX_TITLE_CHARS = 500
MAX_BATCH = 100


class BadTitle(ValueError):
    """A title the service refuses: a 400."""


def read_titles(path: str = os.path.join(HERE, "titles.tsv")) -> tuple[list[str], list[str]]:
    """(titles, categories) from a CATEGORY<TAB>TITLE file ('#' lines skipped)."""
    titles: list[str] = []
    categories: list[str] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            category, title = line.rstrip("\n").split("\t")
            titles.append(title)
            categories.append(category)
    return titles, categories


class ProductClassifier:
    def __init__(self) -> None:
        started = time.perf_counter()
        titles, categories = read_titles()
        self.model = make_pipeline(
            TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
            LogisticRegression(C=10.0, max_iter=1000),
        )
        # Also for thread pools loaded before this module (numpy imported earlier).
        threadpool_limits(1)
        self.model.fit(titles, categories)
        self.trained_on = len(titles)
        self.accuracy = float(np.mean(self.model.predict(titles) == np.array(categories)))
        self.train_seconds = time.perf_counter() - started

    def classify(self, title: Any) -> dict[str, Any]:
        """{"title", "top": [{"category", "probability"}] * 3}, most likely first."""
        return self.classify_batch([title])[0]

    def classify_batch(self, titles: Any) -> list[dict[str, Any]]:
        if not isinstance(titles, list) or not titles:
            raise BadTitle('give {"title": "..."} or {"titles": ["...", ...]}')
        if len(titles) > MAX_BATCH:
            raise BadTitle(f"at most {MAX_BATCH} titles per request")
        for t in titles:
            if not isinstance(t, str) or not t.strip():
                raise BadTitle("a title must be a non-empty string")
            if len(t) > MAX_TITLE_CHARS:
                raise BadTitle(f"a title is at most {MAX_TITLE_CHARS} characters")
        probabilities = self.model.predict_proba(titles)
        classes = self.model.classes_
        answers: list[dict[str, Any]] = []
        for title, p in zip(titles, probabilities):
            best = np.argsort(p)[::-1][:TOP]
            answers.append(
                {"title": title, "top": [{"category": classes[i], "probability": p[i]} for i in best]}
            )
        return answers

"""Two scikit-learn digit classifiers trained at start-up on load_digits() (1,797 8x8 images, 64
pixel values 0-16 each): a LogisticRegression and a RandomForest of 50 trees. No pyrs here: main.py
is the HTTP adapter, benches/batching.sh serves the same models through LitServe.
"""

import os
import time
from typing import Any, Optional

# One BLAS/OpenMP thread per process (a server runs one process per core; spinning thread pools on a
# busy machine make every call slower). Set before numpy loads; an explicit setting wins.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import json  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # type: ignore[import-untyped]  # noqa: E402
from sklearn.ensemble import RandomForestClassifier  # type: ignore[import-untyped]  # noqa: E402
from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]  # noqa: E402
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]  # noqa: E402

FEATURES = 64


class BadRow(ValueError):
    """A request body that is not 64 numbers."""


def parse_rows(bodies: list[bytes]) -> Optional[Any]:
    """Request bodies (bytes, each a JSON array of 64 numbers) -> a (n, 64) float array, parsed in
    one numpy call; None when any body is not exactly that (then parse them one by one with
    parse_row to find which)."""
    parts: list[bytes] = []
    for body in bodies:
        body = body.strip()
        if not (body.startswith(b"[") and body.endswith(b"]")):
            return None
        parts.append(body[1:-1])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # numpy warns (or raises) on text it cannot read to the end
            values = np.fromstring(b",".join(parts).decode("ascii"), dtype=np.float64, sep=",")
    except (ValueError, UnicodeDecodeError, DeprecationWarning):
        return None
    if values.size != FEATURES * len(bodies):
        return None
    return values.reshape(len(bodies), FEATURES)


def parse_body(body: bytes) -> list[float]:
    """One request body -> one row of 64 floats (raises BadRow)."""
    try:
        return parse_row(json.loads(body))
    except ValueError as e:  # json.JSONDecodeError is a ValueError
        raise BadRow(str(e)) from None


def parse_row(row: Any) -> list[float]:
    """A JSON-decoded request body -> one row of 64 floats (raises BadRow)."""
    if not isinstance(row, list) or len(row) != FEATURES:
        raise BadRow(f"send a JSON array of {FEATURES} numbers (8x8 pixels, 0-16)")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in row):
        raise BadRow("every pixel must be a number")
    return row


class Digits:
    """The two models, trained once."""

    def __init__(self) -> None:
        threadpool_limits(1)
        started = time.perf_counter()
        digits = load_digits()
        self.images = digits.data  # (1797, 64) float64
        self.labels = digits.target
        self.logreg = LogisticRegression(max_iter=2000).fit(self.images, self.labels)
        self.forest = RandomForestClassifier(n_estimators=50, random_state=0).fit(self.images, self.labels)
        self.train_seconds = time.perf_counter() - started

    def model(self, name: str) -> Any:
        return self.logreg if name == "logreg" else self.forest

    def predict(self, name: str, rows: Any) -> list[int]:
        """Digits for rows (a list of rows or a 2-d array; one model call for all of them)."""
        digits: list[int] = self.model(name).predict(np.asarray(rows, dtype=np.float64)).tolist()
        return digits

"""Two scikit-learn digit classifiers trained at start-up on load_digits() (1,797 8x8 images, 64
pixel values 0-16 each): a LogisticRegression and a RandomForest of 50 trees. No pyrs here: main.py
is the HTTP adapter, benches/batching.sh serves the same models through LitServe.
"""

import os
import time

# One BLAS/OpenMP thread per process (a server runs one process per core; spinning thread pools on a
# busy machine make every call slower). Set before numpy loads; an explicit setting wins.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.ensemble import RandomForestClassifier  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

FEATURES = 64


class BadRow(ValueError):
    """A request body that is not 64 numbers."""


def parse_row(row):
    """A JSON-decoded request body -> one row of 64 floats (raises BadRow)."""
    if not isinstance(row, list) or len(row) != FEATURES:
        raise BadRow(f"send a JSON array of {FEATURES} numbers (8x8 pixels, 0-16)")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in row):
        raise BadRow("every pixel must be a number")
    return row


class Digits:
    """The two models, trained once."""

    def __init__(self):
        threadpool_limits(1)
        started = time.perf_counter()
        digits = load_digits()
        self.images = digits.data  # (1797, 64) float64
        self.labels = digits.target
        self.logreg = LogisticRegression(max_iter=2000).fit(self.images, self.labels)
        self.forest = RandomForestClassifier(n_estimators=50, random_state=0).fit(self.images, self.labels)
        self.train_seconds = time.perf_counter() - started

    def model(self, name):
        return self.logreg if name == "logreg" else self.forest

    def predict(self, name, rows):
        """Digits for a list of rows (one model call for all of them)."""
        return self.model(name).predict(np.asarray(rows, dtype=np.float64)).tolist()

"""pyrs handlers for the product classifier: HTTP in, ProductClassifier (service.py) out.

Routes (project.pyrs):
    POST /classify {"title": T}           -> {"title", "top": [{"category", "probability"}] * 3}
    POST /classify {"titles": [T, ...]}   -> a list of those (at most 100)
    GET  /                                -> usage text
The model is trained once, in __init__, before pyrs forks its workers. The
answer holds what scikit-learn returns (numpy.str_ categories, numpy.float64
probabilities), unconverted.
"""

from typing import Any

import pyrs

from service import BadTitle, ProductClassifier

USAGE = """pyrs classifier example: scikit-learn TF-IDF + logistic regression, 10 product categories.

  curl -d '{"title": "Acme wireless earbuds with microphone"}' http://HOST:PORT/classify
  curl -d '{"titles": ["cast iron skillet", "dog harness no pull"]}' http://HOST:PORT/classify
"""


class Classifier:
    def __init__(self) -> None:
        self.service = ProductClassifier()
        print(
            f"classifier: trained on {self.service.trained_on} titles in {self.service.train_seconds:.1f} s "
            f"(training accuracy {self.service.accuracy:.3f})",
            flush=True,
        )

    def classify(self, request: pyrs.Request) -> Any:
        body = request.json()
        try:
            if isinstance(body, dict) and "title" in body:
                return self.service.classify(body["title"])
            if isinstance(body, dict) and "titles" in body:
                return self.service.classify_batch(body["titles"])
            raise BadTitle('give {"title": "..."} or {"titles": ["...", ...]}')
        except BadTitle as e:
            raise pyrs.HTTPError(400, str(e)) from None

    def usage(self, request: pyrs.Request) -> tuple[str, int]:
        return (USAGE, 200 if request.path == "/" else 404)

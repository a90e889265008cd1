"""The reference for benches/batching.sh: the same scikit-learn models as examples/batched_model,
served by LitServe (PyPI) with max_batch_size=64 and a 2 ms batch_timeout (pyrs's max_wait_ms).

    python litserve_digits.py forest|logreg PORT STATS_FILE

POST /predict with a JSON array of 64 numbers -> {"digit": d}. Every batch rewrites STATS_FILE with
"rows calls" so far (the benchmark's mean batch size).
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples", "batched_model"))

import litserve as ls  # noqa: E402
import numpy as np  # noqa: E402

from service import Digits, parse_row  # noqa: E402

MODEL, PORT, STATS = sys.argv[1], int(sys.argv[2]), sys.argv[3]


class DigitsAPI(ls.LitAPI):
    def setup(self, device):
        self.model = Digits().model(MODEL)
        self.rows = 0
        self.calls = 0
        self.stats = os.open(STATS, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)

    def decode_request(self, request):
        return parse_row(request)

    def batch(self, inputs):
        return np.asarray(inputs, dtype=np.float64)

    def predict(self, x):
        self.rows += len(x)
        self.calls += 1
        os.pwrite(self.stats, f"{self.rows} {self.calls}\n".ljust(40).encode(), 0)
        return self.model.predict(x)

    def unbatch(self, output):
        return list(output)

    def encode_response(self, output):
        return {"digit": int(output)}


if __name__ == "__main__":
    api = DigitsAPI(max_batch_size=64, batch_timeout=0.002)
    ls.LitServer(api, accelerator="cpu", workers_per_device=1).run(port=PORT, host="127.0.0.1", generate_client_file=False)

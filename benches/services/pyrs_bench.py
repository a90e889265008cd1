"""Routes benches/services.sh adds to each pyrs example: GET /pid and GET /gc."""

import gc
import os


class Bench:
    def pid(self, request):
        return {"pid": os.getpid()}

    def collect(self, request):
        gc.collect()
        return {"pid": os.getpid()}

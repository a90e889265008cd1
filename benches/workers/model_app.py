"""A handler holding a ~200 MB "model": a large bytes buffer and a dict of
100k entries, loaded once in the template and shared by the workers."""
import gc
import os


class Model:
    def __init__(self):
        mb = int(os.environ.get("MODEL_MB", "190"))
        self.blob = os.urandom(mb * 1024 * 1024)
        self.users = {f"user{i}": i for i in range(100_000)}
        print(f"model loaded: {mb} MB buffer, {len(self.users)} users", flush=True)

    def lookup(self, request):
        name = request.query.get("u", "user42")
        return {"taken": name in self.users, "byte": self.blob[len(name)]}

    def collect(self, request):
        gc.collect()
        return str(os.getpid())

    def burn(self, request):
        # About 200 us of pure Python on this machine's class of CPU.
        total = 0
        for i in range(int(os.environ.get("BURN_LOOPS", "4000"))):
            total += i * i
        return str(total)

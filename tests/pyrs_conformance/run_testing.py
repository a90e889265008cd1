"""Reads requests (JSON on stdin), answers each with pyrs.testing, prints the raw responses (JSON)."""

import json
import sys

from pyrs.testing import Client

client = Client(sys.argv[1])
out = []
for method, target, headers, body in json.load(sys.stdin):
    r = client.request(method, target, headers=[tuple(h) for h in headers], body=body.encode("latin-1"))
    out.append(r.raw.decode("latin-1"))
client.close()
json.dump(out, sys.stdout)

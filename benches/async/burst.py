"""N connections each send one request at once; prints the wall time until
every response is in (all must be 200).

    python3 benches/async/burst.py PORT [N=1000] [PATH=/sleep?s=0.5]
"""
import resource
import selectors
import socket
import sys
import time

port = int(sys.argv[1])
n = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
path = sys.argv[3] if len(sys.argv) > 3 else "/sleep?s=0.5"
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4 * n)), hard))
request = f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode()
sel = selectors.DefaultSelector()
start = time.monotonic()
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(request)
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ, bytearray())
ok = done = 0
while done < n:
    for key, _ in sel.select(timeout=60):
        chunk = key.fileobj.recv(65536)
        if chunk:
            key.data.extend(chunk)
            continue
        sel.unregister(key.fileobj)
        key.fileobj.close()
        done += 1
        ok += key.data.startswith(b"HTTP/1.1 200")
took = time.monotonic() - start
print(f"{n} concurrent GET {path}: {ok} x 200 in {took:.2f} s")
sys.exit(0 if ok == n else 1)

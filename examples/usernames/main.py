"""pyrs handlers for username availability: HTTP in, UsernameService (service.py) out.

Routes (project.pyrs):
    GET  /available?name=NAME   -> {"name", "available", "checked": "bloom" | "exact"}
    POST /register {"name": N}  -> 201 {"name", "registered": true} | 409 {..., "reason": "taken"}
    GET  /health                -> {"pid", "taken", "registered"}
The generated names, the Bloom filter and the registrations already in the
database are loaded once, in __init__, before pyrs forks its workers.
Registrations go to a SQLite file: $USERNAMES_DB, else registered.sqlite3
next to this file.
"""

import os
from typing import Any

import pyrs

from service import BadName, UsernameService

HERE = os.path.dirname(os.path.abspath(__file__))

USAGE = """pyrs usernames example: an rbloom Bloom filter of 3,000,000 taken names, an exact set, SQLite.

  curl 'http://HOST:PORT/available?name=olivia.smith42'     # taken (generated)
  curl 'http://HOST:PORT/available?name=olivia.smith300'    # free
  curl -d '{"name": "olivia.smith300"}' http://HOST:PORT/register
"""


class Usernames:
    def __init__(self) -> None:
        db = os.environ.get("USERNAMES_DB") or os.path.join(HERE, "registered.sqlite3")
        self.service = UsernameService(db)
        print(
            f"usernames: {len(self.service.taken)} generated names and {len(self.service.registered)} "
            f"registered ones in the filter in {self.service.load_seconds:.1f} s (registrations in {db})",
            flush=True,
        )

    def post_fork(self) -> None:
        self.service.reconnect()

    def available(self, request: pyrs.Request) -> dict[str, Any]:
        try:
            return self.service.available(request.query.get("name", ""))
        except BadName as e:
            raise pyrs.HTTPError(400, str(e)) from None

    def register(self, request: pyrs.Request) -> tuple[dict[str, Any], int]:
        body = request.json()
        if not isinstance(body, dict) or "name" not in body:
            raise pyrs.HTTPError(400, 'the body must be {"name": "..."}')
        try:
            created, answer = self.service.register(body["name"])
        except BadName as e:
            raise pyrs.HTTPError(400, str(e)) from None
        return (answer, 201 if created else 409)

    def health(self, request: pyrs.Request) -> dict[str, int]:
        return self.service.stats()

    def usage(self, request: pyrs.Request) -> tuple[str, int]:
        return (USAGE, 200 if request.path == "/" else 404)

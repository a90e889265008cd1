"""Username availability, independent of any web framework.

In memory, per process (built once in the template, shared by the workers):
- `taken`: the exact set of the 3,000,000 generated names (names.py), a frozenset;
- `bloom`: an rbloom Bloom filter of every taken name (generated and
  registered), 1% false positives, 4.8 MB; "not in the filter" is final;
- `registered`: the exact set of names registered through POST /register.

Registrations must be seen by every worker, survive reloads and restarts, and
a name must never be given twice, even when two workers register it at the
same instant. So the source of truth for registrations is shared storage: a
SQLite database (WAL mode) whose UNIQUE constraint decides races. Each
process keeps its in-memory copies in step with it: before answering, it
asks SQLite whether another connection committed since it last looked
(`PRAGMA data_version`, a read of shared memory, no disk I/O) and, only
then, adds the new rows to its filter and set. A reload or a restart builds
everything afresh from names.py and the database.
"""

import os
import re
import sqlite3
import threading
import time
from typing import Any

from rbloom import Bloom

import names

NAME = re.compile(r"[a-z0-9][a-z0-9._-]{2,31}")
FALSE_POSITIVE_RATE = 0.01
# Room in the filter for registrations before its false-positive rate rises.
REGISTRATION_HEADROOM = 1_000_000


class BadName(ValueError):
    """Not a valid username: a 400."""


def normalise(name: Any) -> str:
    if not isinstance(name, str):
        raise BadName("name must be a string")
    text = name.strip().lower()
    if not NAME.fullmatch(text):
        raise BadName("a name is 3 to 32 characters: a-z, 0-9, '.', '_' or '-', starting with a letter or digit")
    return text


class UsernameService:
    def __init__(self, db_path: str) -> None:
        started = time.perf_counter()
        self.db_path = db_path
        self.taken = frozenset(names.generated())
        self.bloom = Bloom(len(self.taken) + REGISTRATION_HEADROOM, FALSE_POSITIVE_RATE)
        self.bloom.update(self.taken)
        self.registered: set[str] = set()
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._conn_pid: int | None = None
        self._seen_id = 0  # highest registration row already in memory
        self._data_version: int | None = None
        with self._lock:
            self._catch_up()
        # No connection crosses a fork: each process opens its own (SQLite's rule).
        self._close()
        self.load_seconds = time.perf_counter() - started

    # -- storage --------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        """This process's connection (opened on first use after a fork)."""
        if self._conn is None or self._conn_pid != os.getpid():
            conn = sqlite3.connect(self.db_path, timeout=10, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS registered ("
                " id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
                " at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)"
            )
            self._conn, self._conn_pid, self._data_version = conn, os.getpid(), None
        return self._conn

    def _close(self) -> None:
        if self._conn is not None and self._conn_pid == os.getpid():
            self._conn.close()
        self._conn = self._conn_pid = None

    def reconnect(self) -> None:
        """After a fork: a connection of this process's own (the template's
        was closed before forking); opening it now reports a bad path at once."""
        with self._lock:
            self._db()

    def _catch_up(self) -> None:
        """Adds registrations committed by other processes since the last look.
        Called with the lock held."""
        db = self._db()
        version = db.execute("PRAGMA data_version").fetchone()[0]
        if version == self._data_version:
            return
        rows = db.execute("SELECT id, name FROM registered WHERE id > ? ORDER BY id", (self._seen_id,)).fetchall()
        for row_id, name in rows:
            self.registered.add(name)
            self.bloom.add(name)
            self._seen_id = row_id
        self._data_version = version

    # -- the API ---------------------------------------------------------------

    def available(self, name: Any) -> dict[str, Any]:
        """{"name", "available", "checked"}: "checked" is "bloom" when the
        filter alone answered (the name is certainly free), "exact" when the
        exact sets confirmed a filter hit."""
        name = normalise(name)
        with self._lock:
            self._catch_up()
            if name not in self.bloom:
                return {"name": name, "available": True, "checked": "bloom"}
            taken = name in self.taken or name in self.registered
        return {"name": name, "available": not taken, "checked": "exact"}

    def register(self, name: Any) -> tuple[bool, dict[str, Any]]:
        """(True, answer) when `name` is now registered to the caller, (False,
        answer) when it was already taken (by the generated set, or by an
        earlier registration in any worker)."""
        name = normalise(name)
        with self._lock:
            self._catch_up()
            if name in self.taken or name in self.registered:
                return False, {"name": name, "registered": False, "reason": "taken"}
            try:
                self._db().execute("INSERT INTO registered (name) VALUES (?)", (name,))
            except sqlite3.IntegrityError:
                # Another process registered it since our last look.
                self._catch_up()
                return False, {"name": name, "registered": False, "reason": "taken"}
            self.registered.add(name)
            self.bloom.add(name)
        return True, {"name": name, "registered": True}

    def stats(self) -> dict[str, int]:
        with self._lock:
            self._catch_up()
            return {"pid": os.getpid(), "taken": len(self.taken), "registered": len(self.registered)}

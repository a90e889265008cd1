"""Data access: the only layer that speaks SQL. A SQLite database (WAL mode,
so several worker processes read and write it at once); one connection per
thread, and none carried across a fork (`reconnect` after it)."""

import sqlite3
import threading
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS products (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    category TEXT NOT NULL,
    price_cents INTEGER NOT NULL,
    stock INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS products_category ON products (category);
"""

SEED = [
    ("Cast iron skillet 26 cm", "kitchen", 3490, 12),
    ("Chef knife 20 cm", "kitchen", 5900, 7),
    ("Electric kettle 1.7 l", "kitchen", 2999, 30),
    ("Wireless earbuds", "electronics", 7900, 25),
    ("USB-C charger 65 W", "electronics", 3500, 40),
    ("Mechanical keyboard", "electronics", 11900, 5),
    ("Yoga mat 6 mm", "sports", 2490, 18),
    ("Adjustable dumbbells 20 kg", "sports", 14900, 3),
    ("Paperback novel", "books", 999, 100),
    ("Illustrated atlas", "books", 3200, 9),
]

COLUMNS = ("id", "name", "category", "price_cents", "stock")

#: A product row as a dict (column -> value).
Product = dict[str, Any]


class ProductDao:
    def __init__(self, path: str) -> None:
        self.path = path
        self._local = threading.local()
        db = self._db()
        db.executescript(SCHEMA)
        with db:
            if db.execute("SELECT COUNT(*) FROM products").fetchone()[0] == 0:
                db.executemany(
                    "INSERT INTO products (name, category, price_cents, stock) VALUES (?, ?, ?, ?)", SEED
                )
        # No connection crosses a fork (SQLite's rule): the template closes its
        # own before pyrs forks the workers; each opens its own in `reconnect`.
        self.close()

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=10)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    def close(self) -> None:
        """Closes this thread's connection; others' are closed when their threads end."""
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
        self._local = threading.local()

    def reconnect(self) -> None:
        """In a new worker process (post_fork): this process's own connection,
        opened now so that a database problem shows at once."""
        self._local = threading.local()
        self._db()

    def get(self, product_id: int) -> Product | None:
        row = self._db().execute("SELECT * FROM products WHERE id = ?", (product_id,)).fetchone()
        return dict(zip(COLUMNS, row)) if row else None

    def list_by_category(self, category: str, limit: int) -> list[Product]:
        rows = self._db().execute(
            "SELECT * FROM products WHERE category = ? ORDER BY id LIMIT ?", (category, limit)
        ).fetchall()
        return [dict(zip(COLUMNS, r)) for r in rows]

    def insert(self, name: str, category: str, price_cents: int, stock: int) -> Product | None:
        db = self._db()
        with db:
            cur = db.execute(
                "INSERT INTO products (name, category, price_cents, stock) VALUES (?, ?, ?, ?)",
                (name, category, price_cents, stock),
            )
        return self.get(cur.lastrowid) if cur.lastrowid is not None else None

    def update(self, product_id: int, fields: dict[str, Any]) -> Product | None:
        """Sets `fields` (column -> value, columns already checked) on one row;
        the row afterwards, or None when there is no such product."""
        db = self._db()
        assignments = ", ".join(f"{column} = ?" for column in fields)
        with db:
            cur = db.execute(f"UPDATE products SET {assignments} WHERE id = ?", (*fields.values(), product_id))
        return self.get(product_id) if cur.rowcount else None

    def count(self) -> int:
        count: int = self._db().execute("SELECT COUNT(*) FROM products").fetchone()[0]
        return count

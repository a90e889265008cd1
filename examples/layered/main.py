"""The controller layer, served by pyrs: HTTP in and out, and the Redis cache.

    controller (this file) -> service.py (business rules) -> dao.py (SQLite)

Reads are cached in Redis by the controller, as JSON, for 60 seconds
(`CACHE_SECONDS`); writes go through the service and then delete the cache
entries they made stale. Every answer says where it came from in `X-Cache`:
HIT (Redis), MISS (the database, now cached) or BYPASS (Redis unreachable:
served from the database, uncached). Redis being down never fails a request.

Routes (project.pyrs):
    GET  /products/{id}              -> the product            (cached as product:{id})
    PUT  /products/{id}  {fields}    -> the updated product    (invalidates product:{id}, category:{old/new})
    GET  /products?category=C        -> the category's products (cached as category:{C})
    POST /products       {product}   -> 201 the new product    (invalidates category:{C})
    GET  /health                     -> {"pid", "products", "redis"}
Configuration: REDIS_URL (redis://127.0.0.1:6379/0), LAYERED_DB (catalogue.sqlite3 next to this file).
"""

import os
import sys
import time
from typing import Any, Callable

import pyrs
import redis

from dao import ProductDao
from service import Invalid, NotFound, ProductService

HERE = os.path.dirname(os.path.abspath(__file__))
CACHE_SECONDS = 60


class ProductController:
    def __init__(self) -> None:
        self.redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
        db_path = os.environ.get("LAYERED_DB") or os.path.join(HERE, "catalogue.sqlite3")
        self.service = ProductService(ProductDao(db_path))
        self._last_cache_error = 0.0
        self.cache = self._connect_cache()
        try:
            self.cache.ping()
            state = f"Redis at {self.redis_url}"
        except redis.RedisError as e:
            state = f"Redis at {self.redis_url} unreachable ({e}); serving uncached until it is back"
        # The workers open their own connections (post_fork); the template's are closed.
        self.cache.close()
        print(f"layered: {self.service.count()} products in {db_path}; {state}", flush=True)

    def _connect_cache(self) -> "redis.Redis":
        # Short timeouts: a stuck cache must not hold requests for long.
        return redis.Redis.from_url(self.redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)

    def post_fork(self) -> None:
        """In each worker: new Redis and SQLite connections of its own (a
        socket or a SQLite handle shared with another process would mix the
        two processes' traffic)."""
        self.cache = self._connect_cache()
        self.service.dao.reconnect()

    # -- the cache -------------------------------------------------------------

    def _cache_error(self, e: Exception) -> None:
        now = time.monotonic()
        if now - self._last_cache_error > 10:  # at most one line per 10 s
            self._last_cache_error = now
            print(f"layered: Redis error, serving uncached: {e}", file=sys.stderr, flush=True)

    def _cached(self, key: str, load: Callable[[], Any]) -> tuple[bytes, str]:
        """The JSON of `load()`, from Redis when cached there: (bytes, X-Cache)."""
        try:
            cached = self.cache.get(key)
            if isinstance(cached, bytes):
                return cached, "HIT"
        except redis.RedisError as e:
            self._cache_error(e)
            return pyrs.dumps(load()), "BYPASS"
        body = pyrs.dumps(load())
        try:
            self.cache.set(key, body, ex=CACHE_SECONDS)
        except redis.RedisError as e:
            self._cache_error(e)
            return body, "BYPASS"
        return body, "MISS"

    def _invalidate(self, *keys: str) -> None:
        try:
            self.cache.delete(*keys)
        except redis.RedisError as e:
            # The entries expire within CACHE_SECONDS anyway: that bounds staleness.
            self._cache_error(e)

    # -- the routes --------------------------------------------------------------

    @staticmethod
    def _answer(body: bytes, cache_state: str, status: int = 200) -> pyrs.Response:
        return pyrs.Response(body, status=status, headers={"X-Cache": cache_state}, content_type="application/json")

    @staticmethod
    def _id(request: pyrs.Request) -> int:
        product_id = request.params["id"]
        if not product_id.isdigit() or len(product_id) > 18:
            raise pyrs.HTTPError(404, f"no product {product_id}")
        return int(product_id)

    def product(self, request: pyrs.Request) -> Any:
        product_id = self._id(request)
        try:
            if request.method == "PUT":
                old, new = self.service.update(product_id, request.json())
                self._invalidate(f"product:{product_id}", f"category:{old['category']}", f"category:{new['category']}")
                return new
            body, state = self._cached(f"product:{product_id}", lambda: self.service.get(product_id))
            return self._answer(body, state)
        except NotFound as e:
            raise pyrs.HTTPError(404, str(e)) from None
        except Invalid as e:
            raise pyrs.HTTPError(400, str(e)) from None

    def products(self, request: pyrs.Request) -> Any:
        try:
            if request.method == "POST":
                product = self.service.create(request.json())
                self._invalidate(f"category:{product['category']}")
                return (product, 201)
            category = request.query.get("category", "")
            self.service.by_category(category, 1)  # validates before anything is cached
            body, state = self._cached(f"category:{category}", lambda: self.service.by_category(category, 100))
            return self._answer(body, state)
        except Invalid as e:
            raise pyrs.HTTPError(400, str(e)) from None

    def health(self, request: pyrs.Request) -> dict[str, Any]:
        try:
            cache: dict[str, Any] = {"ok": True, "client_id": self.cache.client_id()}
        except redis.RedisError as e:
            cache = {"ok": False, "error": str(e)}
        return {"pid": os.getpid(), "products": self.service.count(), "redis": cache}

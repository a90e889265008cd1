"""Business rules: what a valid product is and what may change. No HTTP, no
SQL, no cache: the controller (main.py) calls it, it calls the DAO (dao.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # types only: the service does not use the DAO module itself
    from dao import Product, ProductDao

CATEGORIES = ("books", "electronics", "garden", "kitchen", "sports", "toys")
MAX_LIST = 100


class NotFound(LookupError):
    pass


class Invalid(ValueError):
    pass


def _name(value: Any) -> str:
    if not isinstance(value, str) or not 1 <= len(value.strip()) <= 100:
        raise Invalid("name must be 1 to 100 characters")
    return value.strip()


def _category(value: Any) -> str:
    if value not in CATEGORIES:
        raise Invalid(f"category must be one of {', '.join(CATEGORIES)}")
    return str(value)


def _count(field: str, value: Any, most: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= most:
        raise Invalid(f"{field} must be an integer from 0 to {most}")
    return value


FIELDS: dict[str, Callable[[Any], Any]] = {
    "name": _name,
    "category": _category,
    "price_cents": lambda v: _count("price_cents", v, 100_000_000),
    "stock": lambda v: _count("stock", v, 1_000_000),
}


class ProductService:
    def __init__(self, dao: ProductDao) -> None:
        self.dao = dao

    def get(self, product_id: int) -> Product:
        product = self.dao.get(product_id)
        if product is None:
            raise NotFound(f"no product {product_id}")
        return product

    def by_category(self, category: str, limit: int = 20) -> list[Product]:
        _category(category)
        if not 1 <= limit <= MAX_LIST:
            raise Invalid(f"limit must be from 1 to {MAX_LIST}")
        return self.dao.list_by_category(category, limit)

    def create(self, data: Any) -> Product:
        if not isinstance(data, dict):
            raise Invalid("the body must be a JSON object")
        missing = [f for f in FIELDS if f not in data]
        if missing:
            raise Invalid(f"missing {', '.join(missing)}")
        product = self.dao.insert(**{f: check(data[f]) for f, check in FIELDS.items()})
        if product is None:
            raise NotFound("the new product is gone")
        return product

    def update(self, product_id: int, data: Any) -> tuple[Product, Product]:
        """(old, new) product: the controller invalidates what both were cached under."""
        if not isinstance(data, dict) or not data:
            raise Invalid("the body must be a JSON object with fields to change")
        unknown = [f for f in data if f not in FIELDS]
        if unknown:
            raise Invalid(f"unknown fields: {', '.join(unknown)}")
        old = self.get(product_id)
        new = self.dao.update(product_id, {f: FIELDS[f](v) for f, v in data.items()})
        if new is None:
            raise NotFound(f"no product {product_id}")
        return old, new

    def count(self) -> int:
        return self.dao.count()

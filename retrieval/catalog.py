"""The product catalog: typed records loaded from JSONL, CSV or YAML and validated."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import SourceError
from .records import content_hash, get_float, get_id, get_int, get_str, get_str_list
from .sources import read_records

__all__ = ["Catalog", "Product", "load_catalog"]


def _file_digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError:
        return "missing"


@dataclass(frozen=True)
class Product:
    id: str
    title: str
    description: str = ""
    price: float | None = None
    currency: str = ""
    category: str = ""
    stock: int | None = None
    images: tuple[Path, ...] = ()

    @property
    def text(self) -> str:
        """What the text encoder sees for this product."""
        return ". ".join(p for p in (self.title, self.category, self.description) if p)

    def content_hash(self) -> str:
        """Changes exactly when the product's vectors must be re-encoded."""
        return content_hash(self.text, [_file_digest(p) for p in self.images])

    def to_record(self) -> dict:
        return {
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "price": self.price,
            "currency": self.currency,
            "category": self.category,
            "stock": self.stock,
            "images": [str(p) for p in self.images],
        }

    @classmethod
    def from_record(cls, rec: dict) -> Product:
        return cls(**{**rec, "images": tuple(Path(p) for p in rec.get("images", ()))})

    @property
    def image_path(self) -> str | None:
        """The service's path of the product's first image, if it has one."""
        return f"/v1/products/{self.id}/image" if self.images else None

    @property
    def similar_path(self) -> str:
        return f"/v1/products/{self.id}/similar"

    def card(self) -> dict[str, Any]:
        """The product as a card on the shop page and in the bot's replies."""
        return {
            "id": self.id,
            "title": self.title,
            "price": self.price,
            "currency": self.currency,
            "stock": self.stock,
            "in_stock": None if self.stock is None else self.stock > 0,
            "image_url": self.image_path,
            "similar_url": self.similar_path,
        }

    def public(self, image_url: str | None = None) -> dict:
        """The product in API answers (``image_url``: absolute, made by the route)."""
        return {
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "price": self.price,
            "currency": self.currency,
            "category": self.category,
            "stock": self.stock,
            "in_stock": None if self.stock is None else self.stock > 0,
            "image_url": image_url,
        }


@dataclass(frozen=True)
class Catalog:
    products: dict[str, Product] = field(default_factory=dict)
    source: Path | None = None

    def __len__(self) -> int:
        return len(self.products)

    def __iter__(self) -> Iterator[Product]:
        return iter(self.products.values())

    def get(self, product_id: str) -> Product | None:
        return self.products.get(product_id)


def load_catalog(path: Path) -> Catalog:
    """Load and validate a catalog; errors name the file, line and field."""
    path = Path(path)
    products: dict[str, Product] = {}
    lines: dict[str, int] = {}
    for line, rec in read_records(path, list_keys=("images",)):
        pid = get_id(path, line, rec)
        if pid in products:
            raise SourceError(
                path, f"duplicate id '{pid}' (first on line {lines[pid]})", line=line, field="id"
            )
        images = get_str_list(path, line, rec, "images") or get_str_list(path, line, rec, "image")
        resolved = []
        for ref in images:
            if "://" in ref or ref.startswith("data:"):
                raise SourceError(
                    path,
                    f"'{ref[:60]}' is a URL; images must be local files (paths relative to the catalog)",
                    line=line,
                    field="images",
                )
            p = (path.parent / ref).resolve()
            if not p.is_file():
                raise SourceError(
                    path,
                    f"image file '{ref}' not found (looked for {p})",
                    line=line,
                    field="images",
                )
            resolved.append(p)
        products[pid] = Product(
            id=pid,
            title=get_str(path, line, rec, "title", required=True, max_len=500),
            description=get_str(path, line, rec, "description"),
            price=get_float(path, line, rec, "price"),
            currency=get_str(path, line, rec, "currency", max_len=8),
            category=get_str(path, line, rec, "category", max_len=200),
            stock=get_int(path, line, rec, "stock"),
            images=tuple(resolved),
        )
        lines[pid] = line
    if not products:
        raise SourceError(path, "the catalog holds no products")
    return Catalog(products, path)

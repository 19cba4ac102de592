"""The product catalog: typed records loaded from JSONL, CSV or YAML and validated."""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import SourceError
from .records import content_hash, get_float, get_id, get_int, get_str, get_str_list
from .sizes import parse_size
from .sources import read_records

__all__ = ["Catalog", "Product", "load_catalog"]


def _file_digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError:
        return "missing"


_LANG = re.compile(r"[a-z]{2,3}(?:-[a-z0-9]{2,8})?")


def _names(path: Path, line: int, rec: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """A catalog line's ``names`` map (language code -> title), checked."""
    raw = rec.get("names")
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise SourceError(
            path, 'expected an object of language -> title, e.g. {"zh": "牛油果"}', line, "names"
        )
    out = []
    for lang, name in raw.items():
        if not isinstance(lang, str) or not _LANG.fullmatch(lang):
            raise SourceError(
                path, f"'{str(lang)[:20]}' is not a language code like zh or pt-br", line, "names"
            )
        if not isinstance(name, str) or not name.strip() or len(name) > 500:
            raise SourceError(
                path,
                f"the {lang} name must be non-empty text of at most 500 characters",
                line,
                "names",
            )
        out.append((lang, " ".join(name.split())))
    return tuple(sorted(out))


_ATTRIBUTE = re.compile(r"[a-z0-9][a-z0-9 &'+-]{0,39}")
MAX_ATTRIBUTES = 30


def _attributes(path: Path, line: int, rec: dict[str, Any]) -> tuple[str, ...]:
    """A catalog line's ``attributes`` list: short lower-case words, de-duplicated, in order."""
    raw = get_str_list(path, line, rec, "attributes")
    out: list[str] = []
    for value in raw:
        word = " ".join(value.split()).casefold()
        if not _ATTRIBUTE.fullmatch(word):
            raise SourceError(
                path,
                f"'{value[:40]}' is not an attribute: up to 40 letters, digits, spaces or '-'",
                line,
                "attributes",
            )
        if word not in out:
            out.append(word)
    if len(out) > MAX_ATTRIBUTES:
        raise SourceError(path, f"at most {MAX_ATTRIBUTES} attributes", line, "attributes")
    return tuple(out)


def _size(path: Path, line: int, rec: dict[str, Any]) -> str:
    """A catalog line's ``size``, checked: a number and a unit ("1 l", "500 g")."""
    text = get_str(path, line, rec, "size", max_len=40)
    if text and parse_size(text) is None:
        raise SourceError(
            path,
            f"'{text}' is not a size: a number and a unit such as 1 l, 500 ml, 250 g, 1.5 kg, "
            "6 x 330 ml or 4 pcs",
            line,
            "size",
        )
    return text


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
    # the title in other languages, e.g. (("zh", "牛油果"),): a catalog line's "names" map
    names: tuple[tuple[str, str], ...] = ()
    brand: str = ""
    # the pack size as sold, e.g. "1 l", "500 g", "6 x 330 ml" (retrieval/sizes.py reads it)
    size: str = ""
    # what a shopper may ask for or avoid: "organic", "vegan", "lactose-free", "dairy" ...
    # (lower case; a catalog line's "attributes" list). Not encoded: metadata like the price.
    attributes: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        """What the text encoder sees for this product."""
        return ". ".join(p for p in (self.title, self.category, self.description) if p)

    def name(self, lang: str | None) -> str:
        """The title in ``lang`` when the catalog gives one, else the title."""
        return dict(self.names).get(lang or "", self.title)

    def named_texts(self) -> list[tuple[str, str]]:
        """(variant, text) per other-language title, for the multilingual view and the
        lexical index: ``name-zh`` -> "牛油果. Avocado"."""
        return [(f"name-{lang}", f"{name}. {self.title}") for lang, name in self.names]

    def content_hash(self) -> str:
        """Changes exactly when the product's vectors must be re-encoded."""
        if self.names:  # (products without names keep the hash they always had)
            return content_hash(self.text, [_file_digest(p) for p in self.images], self.names)
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
            **({"names": dict(self.names)} if self.names else {}),
            **({"brand": self.brand} if self.brand else {}),
            **({"attributes": list(self.attributes)} if self.attributes else {}),
            **({"size": self.size} if self.size else {}),
        }

    @classmethod
    def from_record(cls, rec: dict) -> Product:
        return cls(
            **{
                **rec,
                "images": tuple(Path(p) for p in rec.get("images", ())),
                "names": tuple(sorted((rec.get("names") or {}).items())),
                "attributes": tuple(rec.get("attributes") or ()),
            }
        )

    @property
    def image_path(self) -> str | None:
        """The service's path of the product's first image, if it has one."""
        return f"/v1/products/{self.id}/image" if self.images else None

    @property
    def similar_path(self) -> str:
        return f"/v1/products/{self.id}/similar"

    def card(self, lang: str | None = None) -> dict[str, Any]:
        """The product as a card on the shop page and in the bot's replies, titled in the
        shopper's language ``lang`` when the catalog has that name."""
        return {
            "id": self.id,
            "title": self.name(lang),
            "price": self.price,
            "currency": self.currency,
            "stock": self.stock,
            "in_stock": None if self.stock is None else self.stock > 0,
            "image_url": self.image_path,
            "similar_url": self.similar_path,
            **({"brand": self.brand} if self.brand else {}),
            **({"attributes": list(self.attributes)} if self.attributes else {}),
            **({"size": self.size} if self.size else {}),
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
            "names": dict(self.names),
            "brand": self.brand,
            "attributes": list(self.attributes),
            "size": self.size,
        }


@dataclass(frozen=True)
class Catalog:
    products: dict[str, Product] = field(default_factory=dict)
    source: Path | None = None

    def __len__(self) -> int:
        return len(self.products)

    def __iter__(self) -> Iterator[Product]:
        return iter(self.products.values())

    def __contains__(self, product_id: object) -> bool:
        return isinstance(product_id, str) and self.get(product_id) is not None

    def get(self, product_id: str) -> Product | None:
        return self.products.get(product_id)

    def filter_fields(
        self,
    ) -> Iterator[tuple[str, str, float | None, int | None, tuple[str, ...]]]:
        """(id, category, price, stock, attributes) of every product, in catalog order: what
        filters test (:class:`~retrieval.filters.CatalogColumns`)."""
        for p in self:
            yield p.id, p.category, p.price, p.stock, tuple(p.attributes)

    def first(self, n: int) -> list[Product]:
        """The first ``n`` products in catalog order (the shop page's)."""
        return list(itertools.islice(self, max(0, n)))

    def titles(self) -> Iterator[tuple[str, str]]:
        """(id, title) of every product, in catalog order."""
        for p in self:
            yield p.id, p.title

    def categories(self) -> list[str]:
        """Every category the catalog uses, sorted (as written in the catalog)."""
        return sorted({p.category for p in self})

    def get_many(self, product_ids: Iterable[str]) -> dict[str, Product]:
        """The products of these ids that the catalog has (a store-backed catalog reads them
        in one query)."""
        found = ((pid, self.products.get(pid)) for pid in product_ids)
        return {pid: p for pid, p in found if p is not None}


def load_catalog(path: Path) -> Catalog:
    """Load and validate a catalog; errors name the file, line and field."""
    path = Path(path)
    products: dict[str, Product] = {}
    lines: dict[str, int] = {}
    for line, rec in read_records(path, list_keys=("images", "attributes")):
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
            names=_names(path, line, rec),
            brand=get_str(path, line, rec, "brand", max_len=200),
            size=_size(path, line, rec),
            attributes=_attributes(path, line, rec),
        )
        lines[pid] = line
    if not products:
        raise SourceError(path, "the catalog holds no products")
    return Catalog(products, path)

"""Pack sizes of catalog products: "1 l", "500 g", "1.5 kg", "6 x 330 ml", "250ml".

:func:`parse_size` turns a catalog line's ``size`` text into a dimension and an amount in
that dimension's base unit (millilitres, grams or pieces), so "bigger" and "smaller" can be
compared across units (1 l > 500 ml); sizes of different dimensions do not compare.
"""

from __future__ import annotations

import re

__all__ = ["UNITS", "parse_size"]

# unit -> (dimension, factor to the base unit)
UNITS: dict[str, tuple[str, float]] = {
    "ml": ("volume", 1.0), "cl": ("volume", 10.0), "dl": ("volume", 100.0),
    "l": ("volume", 1000.0), "litre": ("volume", 1000.0), "liter": ("volume", 1000.0),
    "litres": ("volume", 1000.0), "liters": ("volume", 1000.0),
    "g": ("mass", 1.0), "kg": ("mass", 1000.0), "oz": ("mass", 28.3495), "lb": ("mass", 453.592),
    "pcs": ("count", 1.0), "pc": ("count", 1.0), "pieces": ("count", 1.0), "piece": ("count", 1.0),
    "pack": ("count", 1.0), "x": ("count", 1.0),
}  # fmt: skip
_SIZE = re.compile(
    r"^\s*(?:(\d+)\s*[x×]\s*)?(\d+(?:[.,]\d+)?)\s*([a-z]+)\s*$",
    re.I,
)


def parse_size(text: str) -> tuple[str, float] | None:
    """("volume" | "mass" | "count", amount in ml / g / pieces), or None when ``text`` is
    not a size this understands."""
    m = _SIZE.match(text or "")
    if not m:
        return None
    unit = UNITS.get(m.group(3).lower())
    if unit is None:
        return None
    count = int(m.group(1)) if m.group(1) else 1
    amount = float(m.group(2).replace(",", "."))
    if amount <= 0 or count <= 0:
        return None
    return unit[0], count * amount * unit[1]

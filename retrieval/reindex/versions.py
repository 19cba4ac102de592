"""The index versions kept on disk: listing them with what SQL recorded about each
(``describe_versions``, behind ``retrieval versions``) and making an earlier one current again
(``rollback``, behind ``retrieval rollback``)."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Engine

from ..encoders import image_encoder, text_encoder
from ..encoders.base import Encoder
from ..indexformat import faq_expectations, product_expectations
from ..indexstore import current_version, exclusive, list_versions, load_index, set_current
from ..runtime import make_fusion
from ..settings import Settings

__all__ = ["describe_versions", "rollback"]

log = logging.getLogger(__name__)


def describe_versions(settings: Settings, engine: Engine | None) -> list[dict[str, Any]]:
    """Every version on disk, newest first, with what SQL knows about it."""
    from sqlalchemy import select
    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.orm import Session

    from ..store.models import IndexVersionRow

    rows: dict[str, IndexVersionRow] = {}
    if engine is not None:
        try:
            with Session(engine) as s:
                rows = {r.id: r for r in s.scalars(select(IndexVersionRow))}
                for r in rows.values():
                    s.expunge(r)
        except SQLAlchemyError as exc:
            log.warning(
                "could not read index versions from the database: %s", str(exc).splitlines()[0]
            )
    out = []
    for kind in ("faq", "products"):
        current = current_version(settings, kind)
        for v in reversed(list_versions(settings, kind)):
            row = rows.get(v)
            params = (row.params or {}) if row else {}
            out.append(
                {
                    "version": v,
                    "kind": kind,
                    "current": v == current,
                    "created_at": row.created_at.isoformat() if row else None,
                    "created_by": row.created_by if row else None,
                    "items": row.n_items if row else None,
                    "mode": params.get("mode"),
                    "changes": params.get("changes"),
                    "source_hash": row.source_hash if row else None,
                }
            )
    return out


def rollback(
    settings: Settings,
    version: str,
    *,
    wait: bool = False,
    text: Encoder | None = None,
    image: Encoder | None = None,
) -> str:
    """Make an earlier version current again (after checking it fits the configured encoders)."""
    from ..errors import NotFound

    kind = (
        "products"
        if version.startswith("products-")
        else "faq"
        if version.startswith("faq-")
        else None
    )
    if kind is None or version not in list_versions(settings, kind):
        known = list_versions(settings, "faq") + list_versions(settings, "products")
        raise NotFound(
            f"no index version '{version}' published; `retrieval versions` lists them"
            + (f" (e.g. {known[-1]})" if known else "")
        )
    text = text or text_encoder(settings)
    if kind == "faq":
        expect = faq_expectations(text)
    else:
        image = image or image_encoder(settings)
        expect = product_expectations(text, image, make_fusion(settings, text, image))
    load_index(settings, kind, version=version, expect=expect)  # refuses a misfit
    with exclusive(settings, wait=wait):
        previous = current_version(settings, kind)
        set_current(settings, kind, version)
    log.info("%s: current version is now %s (was %s)", kind, version, previous)
    return kind

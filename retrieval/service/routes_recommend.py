"""The shop page's recommendations, under ``/shop/api/`` (public, like the chat):

- ``POST click`` ``{"product_id": ...}``: a shopper's click on a product, logged for the
  recommendations under the page's conversation cookie. Bounded: a known product id only,
  at most :data:`CLICKS_PER_MINUTE` per conversation (429 beyond), the limiter's memory
  capped at :data:`MAX_TRACKED` conversations;
- ``GET popular?days=7&k=8&category=`` (also ``GET /v1/popular``): the products most
  conversations showed interest in within the window, in stock
  (:func:`~retrieval.recommend.popular`), or the best-stocked ones when the log holds too
  little (``basis`` says which);
- ``GET together/{product_id}?k=4`` (also ``GET /v1/products/{id}/together``): what goes
  well with a product (:func:`~retrieval.recommend.together`), each with its basis.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from ..apidoc import error_responses, json_body
from ..errors import Busy, InputError, NotFound, Unavailable
from ..recommend import Recommendation, best_stocked, popular, together
from ..store.events import MAX_DAYS
from .bot_replies import preferred_similar
from .schemas import ClickIn
from .shop import COOKIE

__all__ = ["CLICKS_PER_MINUTE", "MAX_TRACKED", "ClickLimiter", "router"]

CLICKS_PER_MINUTE = 30
MAX_TRACKED = 10_000

router = APIRouter(tags=["shop"])


class ClickLimiter:
    """At most ``per_minute`` clicks per key in any minute (a sliding count of the last
    minute's clicks); the ``max_keys`` least recently seen keys are all it remembers."""

    def __init__(self, per_minute: int = CLICKS_PER_MINUTE, max_keys: int = MAX_TRACKED):
        self.per_minute = per_minute
        self.max_keys = max_keys
        self._seen: OrderedDict[str, list[float]] = OrderedDict()

    def allow(self, key: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        times = [t for t in self._seen.pop(key, []) if now - t < 60.0]
        allowed = len(times) < self.per_minute
        if allowed:
            times.append(now)
        self._seen[key] = times
        while len(self._seen) > self.max_keys:
            self._seen.popitem(last=False)
        return allowed


def _interests(request: Request) -> Any:
    interests = getattr(request.app.state, "interests", None)
    if interests is None:
        raise Unavailable("recommendations need the query log's database, which is not open")
    return interests


def cards(recs: list[Recommendation]) -> list[dict[str, Any]]:
    return [{**r.product.card(), "score": round(r.score, 4), "basis": r.basis} for r in recs]


@router.post(
    "/shop/api/click",
    status_code=204,
    responses=error_responses(404, 422, 429, 503),
    openapi_extra=json_body(ClickIn),
)
async def shop_click(request: Request) -> Response:
    """Log a click on a product for the page's conversation (204, no body)."""
    from .shop import conversation_of

    raw = await request.body()  # bounded by the body-limit middleware
    try:
        body = json.loads(raw or b"null")
    except ValueError:
        raise InputError('send JSON: {"product_id": "..."}') from None
    pid = body.get("product_id") if isinstance(body, dict) else None
    if not isinstance(pid, str) or not pid.strip() or len(pid) > 200:
        raise InputError('send JSON: {"product_id": "..."} with a product id')
    if request.app.state.retriever.snapshot.catalog.get(pid) is None:
        raise NotFound(f"no product with id '{pid[:60]}'")
    cid, new = conversation_of(request)
    if not request.app.state.click_limiter.allow(cid):
        raise Busy("too many clicks; please slow down")
    await run_in_threadpool(_interests(request).record_click, cid, pid)
    response = Response(status_code=204)
    if new:
        response.set_cookie(COOKIE, cid, max_age=30 * 24 * 3600, httponly=True, samesite="strict")
    return response


def _popular(request: Request, days: float, k: int, category: str | None) -> dict[str, Any]:
    snap = request.app.state.retriever.snapshot
    sets = _interests(request).sets(days, None, snap.title_index)
    recs = popular(sets, snap.catalog, k, category)
    basis = "interest"
    if not recs:  # an empty log: say what is shown instead
        recs, basis = best_stocked(snap.catalog, k, category, snap.catalog_columns), "best-stocked"
    since = datetime.now(UTC) - timedelta(days=days)
    return {
        "window_days": days,
        "since": since.isoformat(timespec="seconds"),
        "basis": basis,
        "products": cards(recs),
    }


def _together(request: Request, product_id: str, k: int, days: float) -> dict[str, Any]:
    retriever = request.app.state.retriever
    snap = retriever.snapshot
    if snap.catalog.get(product_id) is None:
        raise NotFound(f"no product with id '{product_id[:60]}'")
    sets = _interests(request).sets(days, None, snap.title_index)

    nearest = preferred_similar(retriever, None)

    def similar(pid: str, n: int) -> list[Any]:
        return [(m.product, m.score) for m in nearest(pid, n, None)]

    recs = together(product_id, sets, snap.catalog, k, similar)
    return {"product_id": product_id, "window_days": days, "products": cards(recs)}


_DAYS = Annotated[float, Query(gt=0, le=MAX_DAYS, description="the window, in days")]


@router.get("/shop/api/popular", responses=error_responses(422, 503))
@router.get("/v1/popular", tags=["products"], responses=error_responses(422, 503))
async def popular_products(
    request: Request,
    days: _DAYS = 7.0,
    k: Annotated[int, Query(ge=1, le=24)] = 8,
    category: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    """Popular products: the most conversations' interest (answers, clicks, agents' replies)
    in the window, in stock; with too little in the log, the best-stocked products, and
    ``basis`` says which."""
    return await run_in_threadpool(_popular, request, days, k, category)


@router.get("/shop/api/together/{product_id}", responses=error_responses(404, 422, 503))
@router.get(
    "/v1/products/{product_id}/together",
    tags=["products"],
    responses=error_responses(404, 422, 503),
)
async def goes_well_with(
    request: Request,
    product_id: str,
    k: Annotated[int, Query(ge=1, le=12)] = 4,
    days: _DAYS = 30.0,
) -> dict[str, Any]:
    """What goes well with a product: asked about in the same conversations (cosine of
    conversation sets), then the most similar products for the rest; each card's
    ``basis`` says which."""
    return await run_in_threadpool(_together, request, product_id, k, days)

"""``/v1/products/...``: one product, similar products, and a product's image.

The image route serves a file only when its real path (links resolved) lies inside the
catalog image folder (``catalog_images_dir``, default the catalog's folder) and it is one
of the image types the service reads; a catalog line naming ``/etc/passwd`` or
``../../secret.jpg`` gets 404. Images go out with ``X-Content-Type-Options: nosniff`` and
``Content-Security-Policy: sandbox`` so a file that is not what its name says cannot run
as a page of this origin.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from ..apidoc import error_responses, live
from ..errors import NotFound
from .schemas import ProductOut, SimilarOut

__all__ = ["IMAGE_HEADERS", "router", "servable_image"]

log = logging.getLogger(__name__)

router = APIRouter(tags=["products"])

IMAGE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "sandbox; default-src 'none'",
    "Cache-Control": "public, max-age=3600",
}
_IMAGE_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
    ".gif": "image/gif",
    ".bmp": "image/bmp",
}


def servable_image(path: Path, folder: Path) -> tuple[Path, str] | None:
    """The real path of a catalog image and its media type, if it may be served."""
    try:
        real = Path(path).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    media = _IMAGE_TYPES.get(real.suffix.lower())
    if media is None or not real.is_file() or not real.is_relative_to(folder):
        return None
    return real, media


def _image_url(request: Request, product_id: str, has_image: bool) -> str | None:
    return str(request.url_for("product_image", product_id=product_id)) if has_image else None


@router.get(
    "/v1/products/{product_id}/similar",
    response_model=SimilarOut,
    responses=error_responses(404, 422),
)
async def similar(
    request: Request,
    product_id: str,
    k: Annotated[
        int | None,
        Query(
            ge=1,
            description="How many products (1..max_k; default default_k_products).",
            json_schema_extra=live(maximum="max_k"),
        ),
    ] = None,
) -> SimilarOut:
    """The products most like a catalog product (404 for an unknown id)."""
    r = request.app.state.retriever
    matches = await run_in_threadpool(r.similar_products, product_id, k)
    return SimilarOut(
        product_id=product_id,
        products=[
            ProductOut(**m.public(_image_url(request, m.product.id, bool(m.product.images))))
            for m in matches
        ],
    )


@router.get("/v1/products/{product_id}", response_model=ProductOut, responses=error_responses(404))
async def product(request: Request, product_id: str) -> ProductOut:
    p = request.app.state.retriever.snapshot.catalog.get(product_id)
    if p is None:
        raise NotFound(f"no product with id '{product_id}'")
    return ProductOut(
        **p.public(_image_url(request, p.id, bool(p.images))),
        score=None,
        text_score=None,
        image_score=None,
        matched=None,
    )


_IMAGE_CONTENT = {
    media: {"schema": {"type": "string", "format": "binary"}}
    for media in dict.fromkeys(_IMAGE_TYPES.values())
}


@router.get(
    "/v1/products/{product_id}/image",
    name="product_image",
    response_class=FileResponse,
    responses={
        200: {"description": "The product's (first) image.", "content": _IMAGE_CONTENT},
        **error_responses(404),
    },
)
async def product_image(request: Request, product_id: str) -> FileResponse:
    """The product's image, with its own media type (404 when it has none)."""
    p = request.app.state.retriever.snapshot.catalog.get(product_id)
    if p is None or not p.images:
        raise NotFound(f"no image for product '{product_id}'")
    folder = request.app.state.settings.resolved_catalog_images_dir
    found = servable_image(p.images[0], folder)
    if found is None:
        if p.images[0].exists():
            log.warning(
                "not serving the image of product %s: %s is outside %s or not an image file",
                product_id,
                p.images[0],
                folder,
            )
        raise NotFound(f"no image for product '{product_id}'")
    real, media = found
    return FileResponse(real, media_type=media, headers=IMAGE_HEADERS)

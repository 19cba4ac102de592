"""Reading shopper and catalog images safely: bounded bytes, bounded pixels, clear errors."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from .errors import ImageError

__all__ = ["check_image", "load_image"]

# Images are reduced to at most this size before the CNN sees them (it wants 224 px).
_WORKING_SIZE = (512, 512)


def check_image(source: bytes | str | Path, *, max_bytes: int, max_pixels: int) -> None:
    """Raise :class:`ImageError` if :func:`load_image` would refuse ``source`` for its
    size, its pixel count or a header that does not parse, without decoding it."""
    _opened(source, max_bytes=max_bytes, max_pixels=max_pixels)[0].close()


def _opened(
    source: bytes | str | Path, *, max_bytes: int, max_pixels: int
) -> tuple[Image.Image, str]:
    """The image opened lazily (header read, pixels not decoded) and its name for errors,
    once its byte size and pixel count are within the limits."""
    name = "the uploaded file"
    if isinstance(source, (str, Path)):
        path = Path(source)
        name = str(path)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise ImageError(f"cannot read image {path}: {exc.strerror}") from None
        if size > max_bytes:
            raise ImageError(
                f"{name} is {size / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.1f} MB"
            )
        data = path.read_bytes()
    else:
        data = source
    if not data:
        raise ImageError(f"{name} is empty")
    if len(data) > max_bytes:
        raise ImageError(
            f"{name} is {len(data) / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.1f} MB"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise ImageError(
                f"{name} is not an image (supported: JPEG, PNG, WebP, GIF, BMP)"
            ) from None
        except Image.DecompressionBombError:
            raise ImageError(f"{name} has too many pixels") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageError(f"{name} is damaged or truncated ({exc})") from None
        width, height = img.size
        if width * height > max_pixels:
            raise ImageError(
                f"{name} is {width}x{height} ({width * height / 1e6:.0f} megapixels); "
                f"the limit is {max_pixels / 1e6:.0f} megapixels"
            )
    return img, name


def load_image(source: bytes | str | Path, *, max_bytes: int, max_pixels: int) -> Image.Image:
    """Decode an image into a small RGB picture, or raise :class:`ImageError` saying why not.

    Memory and time stay bounded for huge inputs: byte size is checked first, the pixel
    count is read from the header before decoding, and JPEGs are decoded at reduced scale.
    """
    img, name = _opened(source, max_bytes=max_bytes, max_pixels=max_pixels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img.draft("RGB", _WORKING_SIZE)  # JPEG: decode at 1/2, 1/4 or 1/8 scale
            img.load()
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageError(f"{name} is damaged or truncated ({exc})") from None
    img = img.convert("RGB")
    img.thumbnail(_WORKING_SIZE)
    return img

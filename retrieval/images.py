"""Reading shopper and catalog images safely: bounded bytes, pixels and decoding memory,
a fixed set of formats, clear errors.

Only JPEG, PNG, WebP, GIF (first frame) and BMP are opened: Pillow knows many more, some of
which run other programs (EPS runs Ghostscript) or have parsers rarely exercised. Every
limit is checked from the header, before a pixel is decoded:

- ``max_bytes``: the size of the file;
- ``max_pixels``: width x height as the header states it;
- ``max_decode_bytes``: the memory decoding needs. JPEGs are decoded at 1/2, 1/4 or 1/8
  scale (never much above the 512 px the CNN needs), so a 100-megapixel JPEG costs a few
  MB; the other formats are decoded in full, so a small PNG that claims 100 megapixels
  (it compresses to a few KB when flat) is refused instead of taking hundreds of MB.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from .errors import ImageError

__all__ = ["FORMATS", "MAX_DECODE_BYTES", "check_image", "load_image", "read_image_file"]

# Images are reduced to at most this size before the CNN sees them (it wants 224 px).
_WORKING_SIZE = (512, 512)
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
MAX_DECODE_BYTES = 128 * 1024 * 1024


def check_image(
    source: bytes | str | Path,
    *,
    max_bytes: int,
    max_pixels: int,
    max_decode_bytes: int = MAX_DECODE_BYTES,
) -> None:
    """Raise :class:`ImageError` if :func:`load_image` would refuse ``source`` for its
    size, format, pixel count, decoding memory or a header that does not parse, without
    decoding it."""
    _opened(source, max_bytes=max_bytes, max_pixels=max_pixels, max_decode_bytes=max_decode_bytes)[
        0
    ].close()


def _bytes_per_pixel(mode: str) -> int:
    """Bytes Pillow keeps per pixel of a decoded image in ``mode``."""
    if mode in ("1", "L", "P"):
        return 1
    if mode.startswith("I;16"):
        return 2
    return 4  # RGB, RGBA, CMYK, YCbCr, LA, I, F, ... are stored in 32 bits


def _decode_cost(img: Image.Image) -> int:
    """Peak bytes of :func:`load_image`: the decoded raster, plus its RGB copy when the
    mode is not RGB already (an RGB image is shrunk before it is copied)."""
    width, height = img.size
    extra = 0 if img.mode == "RGB" else 4
    return width * height * (_bytes_per_pixel(img.mode) + extra)


def _opened(
    source: bytes | str | Path,
    *,
    max_bytes: int,
    max_pixels: int,
    max_decode_bytes: int,
    name: str | None = None,
) -> tuple[Image.Image, str]:
    """The image opened lazily (header read, pixels not decoded, JPEG decoding scale set)
    and its name for errors (the path, else ``name``, else "the uploaded file"), once it is
    within every limit; an error carries the file's name as ``path``."""
    named = _file_name(source, name)
    try:
        return _opened_as(
            source, named or "the uploaded file", max_bytes, max_pixels, max_decode_bytes
        )
    except ImageError as exc:
        exc.path = named  # which file, for a caller that reports its owner (a product)
        raise


def _file_name(source: bytes | str | Path, name: str | None) -> str | None:
    """The file an image came from: its path, or the name given with its bytes."""
    return str(source) if isinstance(source, (str, Path)) else name


def read_image_file(path: str | Path, max_bytes: int) -> bytes:
    """An image file's bytes, or an :class:`ImageError` naming it (unreadable, or over
    ``max_bytes``, checked before it is read)."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageError(f"cannot read image {path}: {exc.strerror}", str(path)) from None
    if size > max_bytes:
        raise ImageError(
            f"{path} is {size / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.1f} MB", str(path)
        )
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ImageError(f"cannot read image {path}: {exc.strerror}", str(path)) from None


def _opened_as(
    source: bytes | str | Path, name: str, max_bytes: int, max_pixels: int, max_decode_bytes: int
) -> tuple[Image.Image, str]:
    data = read_image_file(source, max_bytes) if isinstance(source, (str, Path)) else source
    if not data:
        raise ImageError(f"{name} is empty")
    if len(data) > max_bytes:
        raise ImageError(
            f"{name} is {len(data) / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.1f} MB"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data), formats=FORMATS)
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
        try:
            img.draft("RGB", _WORKING_SIZE)  # JPEG: decode at 1/2, 1/4 or 1/8 scale
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageError(f"{name} is damaged or truncated ({exc})") from None
        cost = _decode_cost(img)
        if cost > max_decode_bytes:
            img.close()
            raise ImageError(
                f"{name} is a {width}x{height} {img.format} image; decoding it would take "
                f"{cost / 1e6:.0f} MB, over the limit of {max_decode_bytes / 1e6:.0f} MB "
                "(only JPEGs are decoded at reduced size: send a JPEG or a smaller image)"
            )
    return img, name


def load_image(
    source: bytes | str | Path,
    *,
    max_bytes: int,
    max_pixels: int,
    max_decode_bytes: int = MAX_DECODE_BYTES,
    name: str | None = None,
) -> Image.Image:
    """Decode an image, once, into a small RGB picture, or raise :class:`ImageError`
    saying why not.

    Memory and time stay bounded for huge inputs: the byte size is checked first; format,
    pixel count and decoding memory are read from the header before decoding; JPEGs are
    decoded at reduced scale. ``name`` names bytes in errors (a file read elsewhere)."""
    img, name = _opened(
        source,
        max_bytes=max_bytes,
        max_pixels=max_pixels,
        max_decode_bytes=max_decode_bytes,
        name=name,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img.load()
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageError(
                f"{name} is damaged or truncated ({exc})", _file_name(source, name)
            ) from None
    if img.mode == "RGB":
        img.thumbnail(_WORKING_SIZE)  # shrink first: no full-size copy
        small = img.copy()  # a plain image, not tied to the source bytes
        img.close()
        return small
    rgb = img.convert("RGB")
    img.close()
    rgb.thumbnail(_WORKING_SIZE)
    return rgb

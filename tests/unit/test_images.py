import io
import time
import tracemalloc
from pathlib import Path

import pytest
from PIL import Image

from retrieval.errors import ImageError
from retrieval.images import load_image

MB = 1024 * 1024


def jpeg(size: tuple[int, int], colour: str = "red", quality: int = 75) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def test_a_normal_photo_is_reduced() -> None:
    img = load_image(jpeg((1600, 1200)), max_bytes=20 * MB, max_pixels=100_000_000)
    assert img.mode == "RGB" and max(img.size) <= 512


def test_not_an_image() -> None:
    with pytest.raises(ImageError, match="not an image"):
        load_image(b"%PDF-1.4 this is a pdf", max_bytes=MB, max_pixels=10**8)


def test_truncated_image() -> None:
    data = jpeg((800, 600), quality=95)
    with pytest.raises(ImageError, match="damaged or truncated"):
        load_image(data[: len(data) // 3], max_bytes=MB, max_pixels=10**8)


def test_damaged_header() -> None:
    with pytest.raises(ImageError, match="damaged or truncated"):
        load_image(b"\xff\xd8\xff\xe0 truncated jpeg", max_bytes=MB, max_pixels=10**8)


def test_empty_and_oversized_bytes(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="empty"):
        load_image(b"", max_bytes=MB, max_pixels=10**8)
    with pytest.raises(ImageError, match="the limit is"):
        load_image(b"\xff" * (2 * MB), max_bytes=MB, max_pixels=10**8)
    big = tmp_path / "big.jpg"
    big.write_bytes(b"\xff" * (2 * MB))
    with pytest.raises(ImageError, match="big.jpg is 2.1 MB"):
        load_image(big, max_bytes=MB, max_pixels=10**8)
    with pytest.raises(ImageError, match="cannot read"):
        load_image(tmp_path / "missing.jpg", max_bytes=MB, max_pixels=10**8)


def test_fifty_megapixel_photo_in_bounded_time_and_memory() -> None:
    data = jpeg((8660, 5780))  # 50 megapixels
    tracemalloc.start()
    t0 = time.perf_counter()
    img = load_image(data, max_bytes=20 * MB, max_pixels=100_000_000)
    elapsed = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert max(img.size) <= 512
    assert elapsed < 5.0
    assert peak < 64 * MB  # a full decode would need 150 MB


def test_too_many_pixels_are_refused_from_the_header() -> None:
    buf = io.BytesIO()
    Image.new("1", (12000, 10000)).save(buf, "PNG")  # 120 MP, tiny file
    with pytest.raises(
        ImageError, match=r"12000x10000 \(120 megapixels\); the limit is 100 megapixels"
    ):
        load_image(buf.getvalue(), max_bytes=20 * MB, max_pixels=100_000_000)


def test_only_the_supported_formats_are_opened() -> None:
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 32 32\nshowpage\n"
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), "red").save(buf, "TIFF")  # a format Pillow reads, not we
    for data in (eps, buf.getvalue()):
        with pytest.raises(ImageError, match=r"not an image \(supported: JPEG, PNG, WebP"):
            load_image(data, max_bytes=MB, max_pixels=10**8)
    for fmt in ("PNG", "WEBP", "GIF", "BMP"):
        buf = io.BytesIO()
        Image.new("RGB", (40, 30), "blue").save(buf, fmt)
        img = load_image(buf.getvalue(), max_bytes=MB, max_pixels=10**8)
        assert img.mode == "RGB" and img.size == (40, 30), fmt


def test_a_flat_png_that_decodes_to_hundreds_of_mb_is_refused_from_its_header() -> None:
    """90 megapixels of one colour compress to ~90 KB; decoding would take 360+ MB."""
    buf = io.BytesIO()
    Image.new("L", (10000, 9000)).save(buf, "PNG")
    data = buf.getvalue()
    assert len(data) < 200_000
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(ImageError, match=r"10000x9000 PNG image; decoding it would take"):
            load_image(data, max_bytes=20 * MB, max_pixels=100_000_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * MB and time.perf_counter() - t0 < 1.0
    # the same number of pixels as a JPEG is fine: it is decoded at 1/8 scale
    img = load_image(jpeg((10000, 9000)), max_bytes=20 * MB, max_pixels=100_000_000)
    assert max(img.size) <= 512


def test_an_image_error_carries_the_file_it_names_even_from_another_process(
    tmp_path: Path,
) -> None:
    """A build reports the product of a bad file by the error's ``path``, which must survive
    the pickling that brings it back from a worker process; bytes without a name have none."""
    import pickle

    from retrieval.images import read_image_file

    cut = tmp_path / "cut.jpg"
    data = jpeg((800, 600), quality=95)
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageError) as named:
        load_image(cut, max_bytes=MB, max_pixels=10**8)
    assert named.value.path == str(cut) and str(cut) in str(named.value)
    back = pickle.loads(pickle.dumps(named.value))
    assert back.path == str(cut) and str(back) == str(named.value)
    with pytest.raises(ImageError) as given:
        load_image(cut.read_bytes(), max_bytes=MB, max_pixels=10**8, name="remote/cut.jpg")
    assert given.value.path == "remote/cut.jpg"
    with pytest.raises(ImageError) as anonymous:
        load_image(b"not an image", max_bytes=MB, max_pixels=10**8)
    assert anonymous.value.path is None
    with pytest.raises(ImageError, match="cannot read image") as missing:
        read_image_file(tmp_path / "gone.jpg", MB)
    assert missing.value.path == str(tmp_path / "gone.jpg")
    with pytest.raises(ImageError, match="the limit is"):
        read_image_file(cut, 10)

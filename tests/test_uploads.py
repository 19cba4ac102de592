"""Shopper photos stored for the chat: validated, atomic, addressable only by their id."""

from __future__ import annotations

from pathlib import Path

import pytest

from retrieval.errors import ImageError, NotFound
from retrieval.uploads import UploadStore

from test_retriever import colour_png


def store(tmp_path: Path, max_bytes: int = 1024 * 1024) -> UploadStore:
    return UploadStore(tmp_path / "uploads", max_bytes=max_bytes, max_pixels=10_000_000)


def test_saved_photo_comes_back_by_its_id(tmp_path: Path) -> None:
    s = store(tmp_path)
    data = colour_png("red")
    photo_id = s.save(data)
    assert len(photo_id) == 32 and int(photo_id, 16) >= 0
    assert s.path(photo_id).read_bytes() == data
    assert s.load(photo_id).getpixel((0, 0)) == (255, 0, 0)
    second = s.save(data)
    assert second != photo_id  # ids are random, not content hashes
    assert {p.name for p in (tmp_path / "uploads").iterdir()} == {photo_id, second}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"%PDF-1.4 not a photo", "not an image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not an image|damaged"),
    ],
)
def test_what_is_not_a_photo_is_refused_and_not_stored(
    tmp_path: Path, data: bytes, message: str
) -> None:
    s = store(tmp_path)
    with pytest.raises(ImageError, match=message):
        s.save(data)
    assert not (tmp_path / "uploads").exists() or not list((tmp_path / "uploads").iterdir())


def test_a_photo_over_the_limit_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="limit"):
        store(tmp_path, max_bytes=2048).save(colour_png("red") + b"\x00" * 4096)


@pytest.mark.parametrize(
    "photo_id", [None, 7, "", "../../etc/passwd", "0" * 31, "G" * 32, "0" * 32 + "/x"]
)
def test_only_well_formed_known_ids_name_a_photo(tmp_path: Path, photo_id: object) -> None:
    s = store(tmp_path)
    s.save(colour_png("blue"))
    with pytest.raises(NotFound):
        s.path(photo_id)


def test_unknown_id_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no photo with id"):
        store(tmp_path).path("0123456789abcdef0123456789abcdef")

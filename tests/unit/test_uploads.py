"""Shopper photos stored for the chat: validated, atomic, addressable only by their id."""

from __future__ import annotations

from pathlib import Path

import pytest

from retrieval.errors import ImageError, NotFound
from retrieval.uploads import UploadStore

from fakes import colour_png


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


def test_a_stored_photo_is_not_decoded_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The upload route decodes the photo to check it; the bot's photo action that follows
    gets that decoded picture instead of reading and decoding the file a second time."""
    from PIL import ImageFile

    s = store(tmp_path)
    loads: list[str] = []
    real = ImageFile.ImageFile.load

    def counting(self):  # noqa: ANN001, ANN202 - counts decodes (tiles still to read)
        if self.tile:
            loads.append(self.format)
        return real(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", counting)
    photo_id = s.save(colour_png("red"))
    img = s.load(photo_id)
    assert img.getpixel((0, 0)) == (255, 0, 0)
    assert loads == ["PNG"]  # one decode for save and load together


def test_photos_past_the_retention_period_are_deleted(tmp_path: Path) -> None:
    import os

    now = [1_000_000.0]
    s = UploadStore(
        tmp_path / "uploads",
        max_bytes=1024 * 1024,
        max_pixels=10_000_000,
        retention_s=7 * 86400,
        clock=lambda: now[0],
    )
    old, fresh = s.save(colour_png("red")), s.save(colour_png("blue"))
    os.utime(s.path(old), (now[0] - 8 * 86400, now[0] - 8 * 86400))
    os.utime(s.path(fresh), (now[0] - 86400, now[0] - 86400))
    abandoned = tmp_path / "uploads" / ".0123.tmp"
    abandoned.write_bytes(b"half a photo")
    os.utime(abandoned, (now[0] - 7200, now[0] - 7200))
    removed, freed = s.purge()
    assert removed == 2 and freed == len(colour_png("red")) + len(b"half a photo")
    with pytest.raises(NotFound):
        s.path(old)
    with pytest.raises(NotFound):
        s.load(old)  # not served from memory either
    assert s.path(fresh).is_file()


def test_a_full_store_refuses_new_photos_clearly(tmp_path: Path) -> None:
    import os

    from retrieval.errors import Unavailable

    size = len(colour_png("red"))
    now = [1_000_000.0]
    s = UploadStore(
        tmp_path / "uploads",
        max_bytes=1024 * 1024,
        max_pixels=10_000_000,
        quota_bytes=3 * size,
        retention_s=86400,
        clock=lambda: now[0],
    )
    ids = [s.save(colour_png("red")) for _ in range(3)]
    with pytest.raises(Unavailable, match="photo storage is full") as exc:
        s.save(colour_png("red"))
    assert exc.value.http_status == 503
    assert len(list((tmp_path / "uploads").iterdir())) == 3 and s.usage() == 3 * size
    # an expired photo makes room: the store purges before it refuses
    os.utime(s.path(ids[0]), (now[0] - 2 * 86400, now[0] - 2 * 86400))
    assert s.save(colour_png("red")) not in ids
    assert s.usage() == 3 * size
    # a new store counts what is on disk
    again = UploadStore(
        tmp_path / "uploads", max_bytes=10**6, max_pixels=10**7, quota_bytes=3 * size
    )
    with pytest.raises(Unavailable):
        again.save(colour_png("red"))

"""Request bodies are bounded as they arrive, whatever their shape: chunked (no
Content-Length), one huge file part, many form fields, large text fields. The real app runs
under a real uvicorn on loopback; the client sends from a generator, so the test knows how
much of the body the server pulled before it answered."""

from __future__ import annotations

import threading
import tracemalloc
from collections.abc import Iterator

import httpx
import pytest

from secfixtures import MB, close_retriever, live_app

CHUNK = 64 * 1024


class Body:
    """A request body produced piece by piece; counts what the client had to send."""

    def __init__(self, parts: list[bytes], repeat: int = 1):
        self.parts, self.repeat, self.sent = parts, repeat, 0

    def __iter__(self) -> Iterator[bytes]:
        for _ in range(self.repeat):
            for part in self.parts:
                for i in range(0, len(part), CHUNK):
                    piece = part[i : i + CHUNK]
                    self.sent += len(piece)
                    yield piece


def multipart_file(size: int, boundary: str = "b0undary") -> Body:
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="x.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    return Body([head, b"\xff" * size, f"\r\n--{boundary}--\r\n".encode()])


def multipart_fields(count: int, size: int, boundary: str = "b0undary") -> Body:
    field = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="f"\r\n\r\n'.encode()
        + b"a" * size
        + b"\r\n"
    )
    return Body([field], repeat=count)


def post(base: str, path: str, body: Body, ctype: str, **headers: str) -> httpx.Response:
    with httpx.Client(base_url=base, timeout=30) as c:
        return c.post(path, content=body, headers={"content-type": ctype, **headers})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    srv, r = live_app(tmp_path_factory.mktemp("limits"))
    with srv:
        yield srv
    close_retriever(r)


MULTIPART = "multipart/form-data; boundary=b0undary"
LIMIT = MB + 64 * 1024  # max_image_bytes (1 MiB) + the form's overhead


def test_a_chunked_60_mb_photo_is_refused_before_it_is_read(server) -> None:  # noqa: ANN001
    body = multipart_file(60 * MB)
    r = post(server.base, "/shop/api/photo", body, MULTIPART)
    # the server stopped at the limit; what the client sent beyond it sat in socket buffers
    assert r.status_code == 413 and body.sent < 16 * MB, (r.text, body.sent)
    assert "photos up to 1.0 MB are accepted" in r.json()["detail"]
    assert not list((server.app.state.settings.uploads_dir).glob("*"))


def test_many_large_text_fields_are_never_held_in_memory(server) -> None:  # noqa: ANN001
    """40 text fields of 900 KB (36 MB) used to be parsed in full before the 422."""
    body = multipart_fields(40, 900 * 1024)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        r = post(server.base, "/shop/api/photo", body, MULTIPART)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - before < 2 * LIMIT, (peak - before) / MB
    assert body.sent < 16 * MB
    assert r.status_code == 413 and "form field is over 4 KB" in r.json()["detail"], r.text


def test_many_small_fields_are_refused_by_count(server) -> None:  # noqa: ANN001
    body = multipart_fields(5000, 10)
    r = post(server.base, "/v1/query", body, MULTIPART)
    assert r.status_code == 422 and "too many fields: 8 at most" in r.json()["detail"], r.text
    body = multipart_fields(5000, 10)
    r = post(server.base, "/shop/api/photo", body, MULTIPART)
    assert r.status_code == 422 and "too many fields" in r.json()["detail"], r.text


def test_a_second_file_is_refused(server) -> None:  # noqa: ANN001
    two = multipart_file(10)
    two.parts = two.parts[:2] + [
        b'\r\n--b0undary\r\nContent-Disposition: form-data; name="image"; filename="y.jpg"\r\n\r\nxx',
        b"\r\n--b0undary--\r\n",
    ]
    r = post(server.base, "/v1/query", two, MULTIPART)
    assert r.status_code == 422 and "too many files: 1 at most" in r.json()["detail"], r.text


def test_a_chunked_json_query_over_1_mb_is_refused(server) -> None:  # noqa: ANN001
    body = Body([b'{"text": "' + b"a" * (40 * MB) + b'"}'])
    r = post(server.base, "/v1/query", body, "application/json")
    assert r.status_code == 413 and body.sent < 16 * MB, (r.text, body.sent)
    assert "over 1024 KB" in r.json()["detail"]


def test_a_declared_length_over_the_limit_is_refused_before_the_body(server) -> None:  # noqa: ANN001
    with httpx.Client(base_url=server.base, timeout=30) as c:
        r = c.post(
            "/shop/api/photo",
            content=b"\xff" * (3 * MB),
            headers={"content-type": MULTIPART},
        )
    assert r.status_code == 413
    assert r.json()["detail"].startswith("the request is 3.1 MB; photos up to 1.0 MB")


def test_console_forms_are_not_read_without_a_session(server) -> None:  # noqa: ANN001
    """An anonymous, chunked 40 MB form to a console action: 401, body left unread."""
    field = b"text=" + b"a" * (200 * 1024) + b"&"
    body = Body([field], repeat=200)
    r = post(
        server.base,
        "/agent/questions/x/act",
        body,
        "application/x-www-form-urlencoded",
    )
    assert r.status_code == 401 and "log in" in r.text.lower()
    assert body.sent < 16 * MB, body.sent
    # the login form itself (anonymous by nature) is bounded tightly
    body = Body([b"name=alice&password=" + b"p" * (1 * MB)])
    r = post(server.base, "/agent/login", body, "application/x-www-form-urlencoded")
    assert r.status_code == 413


def test_the_service_keeps_answering_during_an_oversized_upload(server) -> None:  # noqa: ANN001
    results: list[int] = []
    t = threading.Thread(
        target=lambda: results.append(
            post(server.base, "/shop/api/photo", multipart_file(30 * MB), MULTIPART).status_code
        )
    )
    t.start()
    assert httpx.get(f"{server.base}/health", timeout=10).status_code == 200
    t.join(60)
    assert results == [413]

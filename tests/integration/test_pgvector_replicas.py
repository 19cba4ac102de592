"""Two ``retrieval serve`` processes on one pgvector store and one PostgreSQL query log, as
the production layout runs them behind a load balancer (docs/scale-out.md): traffic spread
over both gets the same answers, a version published by a third process reaches both, and
every request's log row reaches the shared database."""

from __future__ import annotations

import signal
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from retrieval.bench.http import start_service
from retrieval.index import VectorIndex
from retrieval.indexfolders import current_version, new_version_id, version_dir
from retrieval.indexstore import pg_store
from retrieval.vectorstore.pgpublish import publish_index

from helpers import DATA, demo_settings

pytestmark = [pytest.mark.scaleout, pytest.mark.models, pytest.mark.slow]

QUESTIONS = [
    "how long does delivery take?",
    "can I return an opened product",
    "do you sell avocados",
    "oat milk",
    "送货要多久",
    "do you deliver to Gotland island on sundays?",
    "what are your opening hours",
    "organic bananas",
]


def test_two_replicas_share_one_store_and_one_log(
    demo_data_dir: Path, pgvector_server, pg_url: str, tmp_path: Path
) -> None:  # noqa: ANN001
    name = "r" + uuid.uuid4().hex[:12]
    pgvector_server.create_database(name)
    url = pgvector_server.conninfo(name)
    files = demo_settings(demo_data_dir)
    store = pg_store(demo_settings(tmp_path, vector_store="pgvector", vector_store_url=url))
    for kind in ("faq", "products"):
        version = current_version(files.index_dir, kind)
        publish_index(
            store, kind, version, VectorIndex.load(version_dir(files.index_dir, kind, version))
        )
    env = {
        "RETRIEVAL_VECTOR_STORE": "pgvector",
        "RETRIEVAL_VECTOR_STORE_URL": url,
        "RETRIEVAL_DATABASE_URL": pg_url,
        "RETRIEVAL_RELOAD_INTERVAL_S": "0.5",
        "RETRIEVAL_CATALOG_PATH": str(DATA / "catalog" / "products.jsonl"),
        "RETRIEVAL_FAQ_PATH": str(DATA / "faq" / "faq.yaml"),
    }
    replicas = []
    try:
        for i in range(2):  # each its own data folder: nothing on disk is shared
            data_dir = tmp_path / f"replica{i}"
            data_dir.mkdir()
            replicas.append(start_service(data_dir, tmp_path / f"replica{i}.log", env=env))
        urls = [u for _, u, _ in replicas]
        answers: dict[str, list[tuple]] = {}
        sent = 0
        with httpx.Client(timeout=60) as client:
            for round_ in range(3):
                for i, q in enumerate(QUESTIONS):
                    base = urls[(i + round_) % 2]  # each question to both, in turn
                    body = client.post(f"{base}/v1/query", json={"text": q, "k_products": 3})
                    assert body.status_code == 200, body.text
                    sent += 1
                    b = body.json()
                    answers.setdefault(q, []).append(
                        (
                            b["decision"],
                            tuple(r["id"] for r in b["replies"][:1]),
                            tuple(p["id"] for p in b["products"][:1]),
                            b["index_versions"]["products"],
                        )
                    )
            for q, seen in answers.items():
                assert len(set(seen)) == 1, (q, seen)

            # a new products version, published by another process (here: this test)
            old = answers[QUESTIONS[0]][0][3]
            index = VectorIndex.load(
                version_dir(
                    files.index_dir, "products", current_version(files.index_dir, "products")
                )
            )
            new = new_version_id("products")
            # published by another writer while both replicas answer: no query may fail
            failed: list[BaseException] = []

            def publish() -> None:
                try:
                    publish_index(store, "products", new, index)
                except BaseException as exc:  # noqa: BLE001 - re-raised by the test below
                    failed.append(exc)

            publishing = threading.Thread(target=publish)
            publishing.start()
            deadline = time.monotonic() + 120
            seen_new = set()
            while (
                (publishing.is_alive() or seen_new != {0, 1})
                and not failed
                and time.monotonic() < deadline
            ):
                for i, base in enumerate(urls):
                    r = client.post(f"{base}/v1/query", json={"text": "kiwi"})
                    sent += 1
                    assert r.status_code == 200, r.text
                    if r.json()["index_versions"]["products"] == new:
                        seen_new.add(i)
                time.sleep(0.1)
            publishing.join(120)
            assert not failed, failed
            assert seen_new == {0, 1} and new != old
    finally:
        for proc, _, _ in replicas:
            proc.send_signal(signal.SIGTERM)  # a clean stop writes every queued log row
        for proc, _, _ in replicas:
            proc.wait(60)
    engine = create_engine(pg_url)
    with engine.connect() as conn:
        logged = conn.execute(text("SELECT count(*) FROM queries")).scalar_one()
    engine.dispose()
    assert logged == sent

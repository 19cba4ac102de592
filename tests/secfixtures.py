"""A fast, real retrieval service for the security tests: the real app (``create_app``) with
the real query log on SQLite, the real console, upload store and limits, over a small
retriever with stand-in encoders (no model weights). ``LiveServer`` runs it under a real
uvicorn on a loopback port, so chunked bodies and early answers go over real sockets."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import uvicorn

from retrieval.build import build_faq_index, build_product_index
from retrieval.catalog import Catalog, Product
from retrieval.decision import DecisionPolicy
from retrieval.faq import FAQBank
from retrieval.fusion import Fusion
from retrieval.index import IndexParams
from retrieval.retriever import Limits, Retriever
from retrieval.service import create_app
from retrieval.settings import Settings
from retrieval.snapshot import Snapshot
from retrieval.store import QueryLog, make_engine, migrate

from fakes import FAQ, ColourImageEncoder, HashingTextEncoder, colour_png
from pg import free_port

WEBHOOK_TOKEN = "webhook-secret-for-tests-0123456789"
API_KEY = "api-key-for-tests-0123456789"
MB = 1024 * 1024


def settings_for(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "var",
        "catalog_path": tmp_path / "catalog" / "products.jsonl",
        "max_image_bytes": MB,
        "webhook_token": WEBHOOK_TOKEN,
        "api_key": API_KEY,
        "rasa_url": f"http://127.0.0.1:{free_port()}",  # nothing listens: Rasa is down
        "chat_timeout_s": 2.0,
        "reload_interval_s": 0.0,
    }
    values.update(overrides)
    return Settings(**values)


def small_retriever(settings: Settings, images: Path | None = None) -> Retriever:
    """Three products (two with a colour image in the catalog folder), the test FAQ bank,
    stand-in encoders and a real query log on SQLite in the data dir."""
    folder = settings.catalog_path.parent
    folder.mkdir(parents=True, exist_ok=True)
    products = [
        Product(
            "red-apple",
            "red apple",
            "a crisp red apple",
            1.0,
            "EUR",
            "Fruit",
            5,
            (colour_png("red", folder / "r.png"),),
        ),
        Product(
            "banana",
            "organic banana",
            "yellow banana",
            0.5,
            "EUR",
            "Fruit",
            0,
            (colour_png("yellow", folder / "y.png"),),
        ),
        Product("gift-card", "gift card", "a digital gift card", 10.0, "EUR", "Gifts", None, ()),
    ]
    text, image = HashingTextEncoder(), ColourImageEncoder()
    fusion = Fusion(image.dim, text.dim)
    params = IndexParams(m=8, ef_construction=50, ef=20)
    faq_index = build_faq_index(FAQBank({e.id: e for e in FAQ}), text, params)
    faq_index.meta["version"] = "faq-test"
    prod_index = build_product_index(
        Catalog({p.id: p for p in products}),
        text,
        image,
        fusion,
        params,
        max_image_bytes=10**7,
        max_image_pixels=10**8,
    )
    prod_index.meta["version"] = "products-test"
    snap = Snapshot.from_indexes(faq_index, prod_index, DecisionPolicy(0.6, 0.3, 0.05))
    engine = make_engine(settings.resolved_database_url)
    migrate(engine)  # here, not in the writer thread: the console migrates the same engine
    qlog = QueryLog(engine, settings.spool_dir, flush_interval=0.05)
    return Retriever(
        text_encoder=text,
        image_encoder=image,
        fusion=fusion,
        snapshot=snap,
        limits=Limits(
            max_query_chars=settings.max_query_chars,
            max_image_bytes=settings.max_image_bytes,
            max_image_pixels=settings.max_image_pixels,
        ),
        query_log=qlog,
    )


def close_retriever(r: Retriever) -> None:
    r.query_log.close()
    r.query_log.engine.dispose()


class LiveServer:
    """The app under uvicorn in a thread on 127.0.0.1; ``base`` is its URL."""

    def __init__(self, app: Any):
        self.app = app
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def live_app(tmp_path: Path, **overrides: Any) -> tuple[LiveServer, Retriever]:
    settings = settings_for(tmp_path, **overrides)
    r = small_retriever(settings)
    return LiveServer(create_app(settings, r)), r

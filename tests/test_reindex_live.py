"""Re-indexing against a running service with the real models: no query fails or sees a
half-built version while versions are published, and a re-index killed at any point
leaves the previous version serving and the next run completes cleanly."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml

from retrieval.storage import current_version, list_versions, load_current

from conftest import DATA, ROOT
from pg import free_port

pytestmark = [pytest.mark.slow, pytest.mark.models]


@pytest.fixture(scope="module")
def live(demo_index: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    tmp = tmp_path_factory.mktemp("live-reindex")
    faq = tmp / "faq.yaml"
    shutil.copy(DATA / "faq" / "faq.yaml", faq)
    shutil.copytree(demo_index / "index", tmp / "var" / "index")
    env = {
        **os.environ,
        "RETRIEVAL_DATA_DIR": str(tmp / "var"),
        "RETRIEVAL_FAQ_PATH": str(faq),
        "RETRIEVAL_CATALOG_PATH": str(DATA / "catalog" / "products.jsonl"),
        "RETRIEVAL_FAQ_CALIBRATION_PATH": str(DATA / "faq" / "calibration.jsonl"),
        "RETRIEVAL_RELOAD_INTERVAL_S": "0.2",
    }
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "retrieval.cli", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    while True:
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert server.poll() is None and time.monotonic() < deadline, "service did not start"
        time.sleep(0.5)
    yield base, faq, env, tmp / "var" / "index"
    server.send_signal(signal.SIGINT)
    server.wait(30)


def add_entries(faq: Path, entries: list[dict]) -> None:
    current = yaml.safe_load(faq.read_text(encoding="utf-8"))
    current["entries"] += entries
    faq.write_text(yaml.safe_dump(current, allow_unicode=True), encoding="utf-8")


def reindex_cmd(env: dict, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "retrieval.cli",
        "reindex",
        "--only",
        "faq",
        "--no-progress",
        *extra,
    ]


def faq_ids(index_dir: Path, version: str) -> set[str]:
    from retrieval.index import VectorIndex

    return {r["id"] for r in VectorIndex.load(index_dir / "faq" / version).meta["records"]}


def test_queries_never_fail_while_versions_are_published(live) -> None:  # noqa: ANN001
    base, faq, env, index_dir = live
    versions = {current_version(index_dir, "faq")}
    stop = threading.Event()
    seen: list[tuple[int, str | None, list[str]]] = []
    questions = [
        "how long does delivery take?",
        "is promo code ZEBRA3 valid",
        "do you have oat milk",
    ]

    def loop(i: int) -> None:
        with httpx.Client(base_url=base, timeout=30) as c:
            n = i
            while not stop.is_set():
                r = c.post("/v1/query", json={"text": questions[n % 3], "k_faq": 3})
                n += 1
                body = r.json() if r.status_code == 200 else {}
                seen.append(
                    (
                        r.status_code,
                        (body.get("index_versions") or {}).get("faq"),
                        [reply["id"] for reply in body.get("replies", [])],
                    )
                )

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        for n in (1, 2, 3):
            add_entries(
                faq,
                [
                    {
                        "id": f"marker-{n}",
                        "question": f"is promo code ZEBRA{n} valid",
                        "answer": f"Code ZEBRA{n} is valid.",
                    }
                ],
            )
            out = subprocess.run(
                reindex_cmd(env), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
            )
            assert out.returncode == 0, out.stderr
            assert "faq: incremental" in out.stdout and "1 added" in out.stdout
            versions.add(current_version(index_dir, "faq"))
            time.sleep(1.0)  # the service notices within reload_interval_s
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert len(versions) == 4
    assert len(seen) >= 200, len(seen)
    assert [s for s in seen if s[0] != 200] == []  # not one error
    ids = {v: faq_ids(index_dir, v) for v in versions}
    for _status, version, replies in seen:
        assert version in ids, version  # a published, complete version
        assert set(replies) <= ids[version]  # every reply comes from that version's entries
    last = max(versions)
    assert any(v == last for _, v, _ in seen)
    final = httpx.post(
        f"{base}/v1/query", json={"text": "is promo code ZEBRA3 valid"}, timeout=30
    ).json()
    assert final["index_versions"]["faq"] == last and final["replies"][0]["id"] == "marker-3"


def test_a_killed_reindex_leaves_the_service_on_the_last_good_version(live) -> None:  # noqa: ANN001
    base, faq, env, index_dir = live
    add_entries(
        faq,
        [
            {
                "id": f"bulk-{i}",
                "question": f"bulk question {i} about parcel lockers in district {i}",
                "answer": f"Locker {i}.",
            }
            for i in range(600)
        ],
    )

    def kill_when(line_marker: str | None, delay: float) -> str:
        before = current_version(index_dir, "faq")
        proc = subprocess.Popen(
            reindex_cmd(env),
            cwd=ROOT,
            env=env,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        if line_marker is not None:
            for line in proc.stderr:
                if line_marker in line:
                    break
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        after = current_version(index_dir, "faq")
        index = load_current(index_dir, "faq", expect={})  # whatever is current loads completely
        assert after in (before, index.meta["version"]) and index.meta["version"] == after
        health = httpx.get(f"{base}/health", timeout=10)
        assert health.status_code == 200
        return before

    before = kill_when("encoding", 0.5)  # mid-encoding
    assert current_version(index_dir, "faq") == before  # nothing was published
    kill_when("writing version", 0.0)  # mid-write (or just after the publish)
    kill_when(None, 2.0)  # wherever it happens to be

    # a second job while one runs is refused with a clear message
    first = subprocess.Popen(
        reindex_cmd(env),
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    for line in first.stderr:
        if "encoding" in line:
            break
    second = subprocess.run(
        reindex_cmd(env), cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert second.returncode == 2 and "another index job is running (pid" in second.stderr
    out, _ = first.communicate(timeout=600)
    assert first.returncode == 0, out

    index = load_current(index_dir, "faq", expect={})
    records = {r["id"] for r in index.meta["records"]}
    assert {"bulk-0", "bulk-599", "marker-3"} <= records
    assert (
        not list((index_dir / "faq").glob(".tmp-*"))
        and not (index_dir / "faq" / ".CURRENT.tmp").exists()
    )
    assert len(list_versions(index_dir, "faq")) <= 5  # old versions pruned
    time.sleep(1.0)
    r = httpx.post(
        f"{base}/v1/query",
        json={"text": "bulk question 377 about parcel lockers in district 377"},
        timeout=30,
    ).json()
    assert (
        r["index_versions"]["faq"] == index.meta["version"] and r["replies"][0]["id"] == "bulk-377"
    )

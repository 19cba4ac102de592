"""How overall accuracy grows as agents label questions: a simulation on public data through
the real service, console API, re-index and evaluation.

    .venv/bin/retrieval datasets convert hint3 var/eval/hint3own          # the shops' own TRAIN
    .venv/bin/python benchmarks/agent_labels.py var/eval/hint3own/sofmattress
    .venv/bin/python benchmarks/agent_labels.py DIR --labels 0,50,200 --seeds 0,1,2 --json out.json

DIR holds a converted shop: ``bank.jsonl``, ``train.jsonl`` (labelled in-scope questions,
the calibration file) and ``queries.jsonl`` (real traffic with out-of-scope lines). For each
seed the queries are split once: a replay pool (``--replay``, default 60 %) and the scored
rest, the same for every label budget, so the budgets differ only in what agents labelled.

For each budget N:

1. a fresh data folder gets the shop's FAQ index by ``ingest`` (bank + TRAIN as the
   calibration file; the demo catalog as products, which the service needs);
2. the replay pool is asked, question by question, through ``POST /v1/query`` with a
   conversation id (so the questions the bot does not answer become agent tasks), and a
   simulated agent acts on each answer through the console API (``/agent/api/...``), knowing
   the true answer:
   - the bot **answered**: the agent flags the answer when it is wrong (an out-of-scope
     question answered, or the wrong entry);
   - the bot **suggested or handed off**: the agent claims the question, accepts the
     suggestion that is right if one is shown, and otherwise writes a reply;
   until N labels (actions) exist or the pool runs out. A right automatic answer gets no
   action, so it is not a label;
3. ``retrieval reindex`` refits the FAQ index with the agents' labels (as production does);
4. ``retrieval eval faq --published`` scores the scored part against the published version.

No scored question is ever replayed or labelled. The label noise is measured on the way: the
share of the agents' out-of-scope labels (write, flag) whose question an entry does answer.
The weight of those labels (``agent_label_weight``) can be varied with ``--agent-weights``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
AGENT, PASSWORD = "sim-agent", "simulated agent password 1"
API_KEY = "simulation-api-key-0123456789"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


def settings_for(data_dir: Path, shop: Path, weight: float):  # noqa: ANN201
    from retrieval.settings import load_settings

    return load_settings(
        None,
        data_dir=data_dir,
        faq_path=shop / "bank.jsonl",
        faq_calibration_path=shop / "train.jsonl",
        catalog_path=REPO / "data/catalog/products.jsonl",
        api_key=API_KEY,
        agent_label_weight=weight,
    )


class Console:
    """The simulated agent: the console API with a session cookie and CSRF token."""

    def __init__(self, client: Any):
        self.client = client
        r = client.post("/agent/api/login", json={"name": AGENT, "password": PASSWORD})
        r.raise_for_status()
        self.csrf = r.json()["csrf_token"]

    def post(self, url: str, body: dict[str, Any]) -> Any:
        return self.client.post(url, json=body, headers={"X-CSRF-Token": self.csrf})

    def claim(self, query_id: str) -> dict[str, Any]:
        """Claim a question; the query log writes in the background, so wait for its task."""
        for _ in range(100):
            self.client.get("/agent/api/queue")  # turns waiting questions into tasks
            r = self.post(f"/agent/api/questions/{query_id}/claim", {})
            if r.status_code == 200:
                return r.json()
            time.sleep(0.1)
        raise RuntimeError(f"question {query_id} never reached the agents' queue: {r.text}")

    def flag(self, query_id: str) -> None:
        """Flag an automatic answer; waits, as :meth:`claim` does, for its log row."""
        for _ in range(100):
            r = self.post(f"/agent/api/queries/{query_id}/flag", {"reason": "wrong answer"})
            if r.status_code != 404:
                r.raise_for_status()
                return
            time.sleep(0.1)
        raise RuntimeError(f"answer {query_id} never reached the query log: {r.text}")


def replay(settings: Any, pool: list[dict[str, Any]], budget: int) -> dict[str, Any]:
    """Ask the pool through the service until the agent has made ``budget`` labels."""
    from fastapi.testclient import TestClient

    from retrieval.console.auth import add_agent
    from retrieval.service.app import create_app
    from retrieval.store.db import make_engine, migrate

    engine = make_engine(settings.resolved_database_url)
    migrate(engine)
    add_agent(engine, AGENT, PASSWORD)
    engine.dispose()
    counts = {"replayed": 0, "labels": 0, "accept": 0, "write": 0, "flag": 0, "no action": 0}
    noisy = 0  # out-of-scope labels on questions an entry answers
    auth = {"Authorization": f"Bearer {API_KEY}"}
    with TestClient(create_app(settings)) as client:
        agent = Console(client)
        for i, row in enumerate(pool):
            if counts["labels"] >= budget:
                break
            truth = set(row["relevant"])
            r = client.post(
                "/v1/query",
                json={"text": row["query"], "conversation_id": f"sim-{i}", "k_products": 1},
                headers=auth,
            )
            r.raise_for_status()
            out = r.json()
            counts["replayed"] += 1
            if out["decision"] == "answer":
                top = out["replies"][0]["id"] if out["replies"] else None
                if truth and top in truth:
                    counts["no action"] += 1
                    continue
                agent.flag(out["query_id"])
                action = "flag"
            else:
                q = agent.claim(out["query_id"])
                right = [s for s in q["suggestions"] if s["faq_id"] in truth]
                body: dict[str, Any] = {"version": q["version"]}
                if right:
                    body |= {"action": "accept", "candidate_id": right[0]["candidate_id"]}
                else:
                    body |= {"action": "write", "text": "An agent's own reply."}
                a = agent.post(f"/agent/api/questions/{out['query_id']}/reply", body)
                a.raise_for_status()
                action = body["action"]
            counts[action] += 1
            counts["labels"] += 1
            noisy += action != "accept" and bool(truth)
    out_of_scope_labels = counts["write"] + counts["flag"]
    counts["noise"] = round(noisy / out_of_scope_labels, 3) if out_of_scope_labels else None
    return counts


def evaluate(data_dir: Path, scored: Path) -> dict[str, Any]:
    """``retrieval eval faq --published``: the fixed interface, in its own process."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [
        str(Path(sys.executable).with_name("retrieval")),
        "eval",
        "faq",
        "--published",
        "--data-dir",
        str(data_dir),
        "--queries",
        str(scored),
        "--json",
        "--no-progress",
        "--latency-sample",
        "0",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"eval failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("shop", type=Path, help="converted shop folder (bank, train, queries)")
    p.add_argument("--labels", default="0,50,200", help="label budgets (comma-separated)")
    p.add_argument("--seeds", default="0", help="seeds of the replay/scored split")
    p.add_argument("--replay", type=float, default=0.6, help="share of the queries replayed")
    p.add_argument("--agent-weights", default="1.0", help="agent_label_weight values to compare")
    p.add_argument("--json", type=Path, help="also write the rows to this file")
    p.add_argument("--keep", type=Path, help="keep the data folders here (default: deleted)")
    args = p.parse_args(argv)
    from retrieval.ingest import ingest
    from retrieval.reindex import reindex
    from retrieval.store.db import make_engine

    budgets = [int(x) for x in args.labels.split(",")]
    weights = [float(x) for x in args.agent_weights.split(",")]
    queries = read_jsonl(args.shop / "queries.jsonl")
    work = Path(tempfile.mkdtemp(prefix="agent-labels-", dir=args.keep))
    rows = []
    try:
        base = work / "base"
        t0 = time.perf_counter()
        ingest(settings_for(base, args.shop, 1.0))
        print(f"ingest: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        for seed in [int(s) for s in args.seeds.split(",")]:
            order = list(range(len(queries)))
            random.Random(seed).shuffle(order)
            cut = int(len(order) * args.replay)
            pool = [queries[i] for i in order[:cut]]
            scored = write_jsonl(work / f"scored-{seed}.jsonl", [queries[i] for i in order[cut:]])
            for budget in budgets:
                for weight in weights if budget else weights[:1]:
                    data_dir = work / f"s{seed}-n{budget}-w{weight:g}"
                    shutil.copytree(base, data_dir)
                    settings = settings_for(data_dir, args.shop, weight)
                    counts: dict[str, Any] = {"replayed": 0, "labels": 0}
                    if budget:
                        counts = replay(settings, pool, budget)
                        engine = make_engine(settings.resolved_database_url)
                        reindex(settings, engine, kinds=("faq",))
                        engine.dispose()
                    metrics = evaluate(data_dir, scored)
                    row = {"seed": seed, "budget": budget, "agent_label_weight": weight}
                    row |= counts
                    row |= {
                        k: metrics.get(k)
                        for k in ("in_scope_hit_at_1", "overall_accuracy", "answered_rate")
                    }
                    row["scored"] = len(order) - cut
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    if args.keep is None:
                        shutil.rmtree(data_dir, ignore_errors=True)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

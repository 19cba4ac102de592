"""The Rasa baseline: Rasa's own DIETClassifier trained on the same bank examples and TRAIN
questions, run on the same queries, with FallbackClassifier (and an out-of-scope intent
learnt from TRAIN's out-of-scope questions) as abstention.

Rasa 3.6 lives in its own Python 3.10 environment (``.venv-rasa``, made by
``scripts/setup-bot.sh``); this module only writes files and runs its commands.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ..errors import ConfigError, RetrievalError
from ..faq import FAQBank
from ..labelled import LabelledQuery
from .metrics import Outcome
from .results import SystemResult

__all__ = ["EPOCHS", "FALLBACK_THRESHOLD", "rasa_baseline", "rasa_config", "rasa_executable"]

log = logging.getLogger(__name__)

EPOCHS = 100
FALLBACK_THRESHOLD = 0.7  # as the shop bot (bot/config.yml)
OUT_OF_SCOPE = "eval_out_of_scope"
NOT_ANSWERS = {"nlu_fallback", OUT_OF_SCOPE}
K = 10

# English version of bot/config.yml's pipeline (offline components only)
CONFIG = """recipe: default.v1
assistant_id: retrieval-eval
language: en
pipeline:
  - name: WhitespaceTokenizer
  - name: RegexFeaturizer
  - name: LexicalSyntacticFeaturizer
  - name: CountVectorsFeaturizer
  - name: CountVectorsFeaturizer
    analyzer: char_wb
    min_ngram: 1
    max_ngram: 4
  - name: DIETClassifier
    epochs: {epochs}
    constrain_similarities: true
    random_seed: {seed}
    run_eagerly: {run_eagerly}
  - name: FallbackClassifier
    threshold: {threshold}
"""

# one process trains and then parses (importing Rasa and TensorFlow once)
SCRIPT = """import asyncio, json, logging, sys, time
logging.disable(logging.WARNING)
from rasa.core.agent import Agent
from rasa.model_training import train_nlu

t0 = time.perf_counter()
model = train_nlu("config.yml", "nlu.json", "models", fixed_model_name="eval")
train_s = time.perf_counter() - t0
if not model:
    sys.exit("training produced no model")

async def main():
    agent = Agent.load(model)
    with open("queries.jsonl", encoding="utf-8") as f, open("parsed.jsonl", "w", encoding="utf-8") as out:
        for line in f:
            text = json.loads(line)
            t1 = time.perf_counter()
            r = await agent.parse_message(text)
            ms = (time.perf_counter() - t1) * 1e3
            ranking = [[x["name"], x["confidence"]] for x in r.get("intent_ranking") or []]
            out.write(json.dumps({"intent": r["intent"]["name"], "ranking": ranking, "ms": ms}) + "\\n")
    with open("train_s.json", "w") as f:
        json.dump(train_s, f)

asyncio.run(main())
"""


def rasa_executable(root: Path | None = None) -> Path:
    """``.venv-rasa/bin/rasa`` of the project, or a clear error naming how to make it."""
    root = root or Path(__file__).resolve().parents[2]
    rasa = root / ".venv-rasa" / "bin" / "rasa"
    if not rasa.is_file():
        raise ConfigError(f"the rasa baseline needs {rasa}; create it with scripts/setup-bot.sh")
    return rasa


def rasa_config(
    epochs: int = EPOCHS,
    seed: int = 7,
    threshold: float = FALLBACK_THRESHOLD,
    *,
    eager: bool = False,
) -> str:
    """The NLU pipeline's config.yml. ``eager`` runs DIET's TensorFlow code eagerly
    (``run_eagerly``): the same model, without tracing its steps into graphs (about a minute
    on 2 cores, paid in training and again when the model is loaded) but with slower steps;
    it pays off only for a handful of examples and epochs, as in the tests."""
    run_eagerly = "true" if eager else "false"
    return CONFIG.format(epochs=epochs, seed=seed, threshold=threshold, run_eagerly=run_eagerly)


def training_examples(
    bank: FAQBank, train: Sequence[LabelledQuery] | None
) -> list[dict[str, object]]:
    """Rasa NLU examples: each entry's question and examples, and the TRAIN questions (the
    first relevant id as intent; out-of-scope ones as an out-of-scope intent)."""
    pairs: dict[str, str] = {}
    for entry in bank:
        for text in ((entry.question,) if entry.question else ()) + entry.examples:
            pairs.setdefault(text, entry.id)
    for q in train or ():
        if q.text:
            pairs.setdefault(q.text, min(q.relevant) if q.relevant else OUT_OF_SCOPE)
    return [{"text": t, "intent": i, "entities": []} for t, i in pairs.items()]


def _run(cmd: list[str], cwd: Path, what: str, timeout: float) -> None:
    env = {**os.environ, "RASA_TELEMETRY_ENABLED": "false", "TF_CPP_MIN_LOG_LEVEL": "2"}
    with (cwd / f"{what}.log").open("w") as logf:
        try:
            proc = subprocess.run(
                cmd, cwd=cwd, env=env, stdout=logf, stderr=subprocess.STDOUT, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            raise RetrievalError(f"the rasa baseline took over {timeout:.0f} s") from None
    if proc.returncode != 0:
        tail = (cwd / f"{what}.log").read_text(errors="replace").strip().splitlines()[-1:]
        raise RetrievalError(
            f"the rasa baseline failed ({proc.returncode}): {' '.join(tail)[:300]}"
        )


def rasa_baseline(
    bank: FAQBank,
    queries: Sequence[LabelledQuery],
    train: Sequence[LabelledQuery] | None,
    *,
    progress: bool = True,
    epochs: int = EPOCHS,
    eager: bool = False,
    timeout: float = 3600,
) -> SystemResult:
    """Train DIET on the bank's phrasings and ``train`` (see :func:`training_examples`) in
    Rasa's environment and parse ``queries`` with it; ``epochs`` and ``eager`` as in
    :func:`rasa_config`."""
    rasa = rasa_executable()
    python = rasa.parent / "python"
    with tempfile.TemporaryDirectory(prefix="retrieval-eval-rasa-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "config.yml").write_text(rasa_config(epochs, eager=eager), encoding="utf-8")
        examples = training_examples(bank, train)
        (tmp / "nlu.json").write_text(
            json.dumps({"rasa_nlu_data": {"common_examples": examples}}), encoding="utf-8"
        )
        (tmp / "queries.jsonl").write_text(
            "".join(json.dumps(q.text) + "\n" for q in queries), encoding="utf-8"
        )
        (tmp / "run.py").write_text(SCRIPT, encoding="utf-8")
        if progress:
            log.warning("rasa baseline: training DIET on %d examples", len(examples))
        _run([str(python), "run.py"], tmp, "rasa", timeout)
        train_s = float(json.loads((tmp / "train_s.json").read_text()))
        parsed = [json.loads(x) for x in (tmp / "parsed.jsonl").read_text().splitlines()]
    if len(parsed) != len(queries):
        raise RetrievalError(f"rasa parsed {len(parsed)} of {len(queries)} queries")
    outcomes = []
    for q, p in zip(queries, parsed, strict=True):
        ranking = [(name, conf) for name, conf in p["ranking"] if name not in NOT_ANSWERS]
        outcomes.append(
            Outcome(
                tuple(name for name, _ in ranking[:K]),
                q.relevant,
                ranking[0][1] if ranking else None,
                p["intent"] not in NOT_ANSWERS,
                p["ms"],
                0.0,
            )
        )
    source = f"FallbackClassifier {FALLBACK_THRESHOLD} and an out-of-scope intent from TRAIN"
    return SystemResult("rasa", tuple(outcomes), True, FALLBACK_THRESHOLD, source, train_s)

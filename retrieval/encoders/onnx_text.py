"""The text model run by ONNX Runtime: the same weights, exported when the model loads.

On one CPU thread torch spends most of a short question's encoding in per-operator overhead;
ONNX Runtime runs the same graph about 2.5x faster for one question and 1.3x faster in
batches (docs/benchmarks.md), with vectors equal to float32 rounding. The export runs in
memory each time the model loads (about 1.5 s for MiniLM), so there is no cache to go stale
when a fine-tuned model replaces the packaged one, and it is checked against torch on probe
texts of several lengths before it is used: a graph whose shapes were fixed by the trace
(a known pitfall of exporting transformers) is refused instead of returning wrong vectors.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError, ModelUnavailable

__all__ = [
    "RUNTIMES",
    "OnnxTextModel",
    "choose_runtime",
    "min_cosine",
    "onnx_installed",
    "release_freed_memory",
]

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "torch", "onnx")
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
AGREEMENT = 1e-5  # smallest cosine allowed between the two runtimes' vectors: 1 - this
# (float32 rounding gives about 1e-7 for MiniLM; a frozen shape or lost mask, 1e-2 or more)

# Probe texts for the check: one token, short and long questions, Chinese (unknown tokens
# for an English vocabulary), and one longer than the model's maximum length (truncation).
# The short ones are also encoded together, so padding inside a batch is checked too.
PROBES = (
    "hi",
    "where is my order?",
    "can I pay for my groceries with a credit card or do you only take cash on delivery?",
    "你们周日送货吗",
    "ue55nu7100 64gb mq8n2b/a",
    " ".join(["the delivery of a large order to an island on a sunday"] * 60),
)


def onnx_installed() -> bool:
    """Whether ONNX Runtime and the onnx package (which torch's exporter writes with) are
    installed; whether they work shows when the model loads."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))


def choose_runtime(setting: str, device: str, dtype: str, *, installed: bool) -> str:
    """Which runtime encodes text: ``onnx`` or ``torch``.

    ``auto`` picks ONNX Runtime on a CPU in float32 when it is installed and torch
    otherwise (GPUs and bfloat16 are torch's; neither is exported). ``onnx`` asked where
    it cannot run is a configuration error, not a silent fallback.
    """
    if setting not in RUNTIMES:
        raise ConfigError(f"text_runtime must be one of {', '.join(RUNTIMES)}, not {setting!r}")
    if setting == "torch":
        return "torch"
    fits = device == "cpu" and dtype == "float32"
    if setting == "onnx":
        if not fits:
            raise ConfigError(
                f"text_runtime 'onnx' runs float32 on the CPU; this model runs {dtype} on "
                f"{device}: use text_runtime 'torch' or 'auto'"
            )
        if not installed:
            raise ModelUnavailable(
                "text_runtime is 'onnx' but onnxruntime or onnx is not installed (pip install "
                "onnxruntime onnx), or use text_runtime 'torch'"
            )
        return "onnx"
    return "onnx" if fits and installed else "torch"


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The smallest cosine similarity between matching rows of ``a`` and ``b``."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return -1.0
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    cos = np.sum(a * b, axis=1) / np.maximum(na * nb, 1e-12)
    return float(cos.min()) if len(cos) else 1.0


def _graph(model: Any, names: Sequence[str]) -> Any:
    """The sentence-transformers pipeline (transformer, pooling, any dense or normalise
    layer) as one module taking the tokenizer's arrays in order, as the exporter wants it."""
    import torch

    class Graph(torch.nn.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *arrays: Any) -> Any:
            return self.model(dict(zip(names, arrays, strict=True)))["sentence_embedding"]

    return Graph().eval()


def _export(model: Any, names: Sequence[str]) -> bytes:
    """The model as an ONNX graph with free batch and sequence sizes, in memory."""
    import torch

    sample = _tokenize(model, ["how long does delivery take to my house?", "hi"])
    inner: Any = getattr(model[0], "auto_model", None)
    before = getattr(getattr(inner, "config", None), "_attn_implementation", None)
    switch = hasattr(inner, "set_attn_implementation")
    if switch:
        # transformers' fused attention builds its mask with Python shape checks that the
        # trace would freeze; the plain implementation traces into shape-free operators
        inner.set_attn_implementation("eager")
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _graph(model, names),
                tuple(torch.from_numpy(sample[n]) for n in names),
                buffer,
                input_names=list(names),
                output_names=["embedding"],
                dynamic_axes={
                    **{n: {0: "batch", 1: "tokens"} for n in names},
                    "embedding": {0: "batch"},
                },
                opset_version=17,
                dynamo=False,
            )
    finally:
        if switch and before:
            inner.set_attn_implementation(before)
    return buffer.getvalue()


def release_freed_memory() -> None:
    """Give the export's freed buffers (the graph was built and copied in memory) back to
    the system; glibc keeps them in its heap otherwise, so the process looks ~300 MB larger."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _tokenize(model: Any, texts: list[str]) -> dict[str, np.ndarray]:
    """The model's own preprocessing (lower-casing, truncation to its maximum length), as
    int64 arrays."""
    prepare = getattr(model, "preprocess", None) or model.tokenize
    features = prepare(texts)
    return {k: features[k].numpy().astype(np.int64, copy=False) for k in _INPUTS if k in features}


class OnnxTextModel:
    """Runs a loaded sentence-transformers model's exported graph; call it with texts to get
    their (not normalised) float32 vectors."""

    def __init__(
        self, model: Any, threads: int, reference: Callable[[list[str]], np.ndarray]
    ) -> None:
        """Export ``model``, open it on ``threads`` CPU threads and check it against
        ``reference`` (torch's vectors for the same texts); raises ModelUnavailable when
        the export fails or disagrees."""
        self._model = model
        try:
            self._open(threads)
            agreement = self._check(reference)
        except ModelUnavailable:
            raise
        except Exception as exc:  # an architecture the exporter cannot trace, a broken install
            raise ModelUnavailable(f"cannot export the text model to ONNX: {exc}") from None
        if agreement < 1 - AGREEMENT:
            raise ModelUnavailable(
                f"the ONNX export of the text model disagrees with torch (cosine {agreement:.7f} "
                "on the probe texts)"
            )
        self.agreement = agreement
        release_freed_memory()

    def _open(self, threads: int) -> None:
        import onnxruntime as ort

        if getattr(self._model, "default_prompt_name", None):
            # torch's encode() puts the prompt before each text; this path would not
            raise ModelUnavailable("the text model has a default prompt, which ONNX does not add")
        self._names = [n for n in _INPUTS if n in _tokenize(self._model, ["hi"])]
        graph = _export(self._model, self._names)
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        # a waiting thread sleeps instead of spinning on the core the web server needs
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])

    def _check(self, reference: Callable[[list[str]], np.ndarray]) -> float:
        """The smallest cosine between this runtime's vectors and ``reference``'s for the
        probe texts, one by one and (the short ones) padded into one batch. A graph whose
        text length was fixed by the trace fails here, by disagreeing or by raising."""
        short, long = list(PROBES[:-1]), [PROBES[-1]]
        expected = np.concatenate([reference(short), reference(long)])
        one_by_one = np.concatenate([self([t]) for t in short + long])
        together = self(short)  # padded to the longest: the mask must hide the padding
        return min(min_cosine(one_by_one, expected), min_cosine(together, expected[: len(short)]))

    def __call__(self, texts: list[str]) -> np.ndarray:
        arrays = _tokenize(self._model, texts)
        out = self._session.run(None, {n: arrays[n] for n in self._names})[0]
        return np.asarray(out, dtype=np.float32)

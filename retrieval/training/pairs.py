"""Training examples for the text encoder: anchors, their entry, and hard negatives.

Pure data handling. An *anchor* is a shopper-style text (an FAQ example phrasing, a
labelled question, an agent-accepted question) with the entry that answers it. Positives
are drawn per epoch from that entry's other phrasings; negatives are phrasings of other
entries that the current encoder ranks close (near misses) or that agents rejected.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..faq import FAQBank

__all__ = [
    "OUT_OF_SCOPE",
    "PRODUCT_ENTRY",
    "Anchor",
    "Batch",
    "anchors_from_bank",
    "batches",
    "mine_near_misses",
    "pool_of",
]

# the answer group of an out-of-scope question used as a negative: no anchor belongs to it,
# so it is never masked out of an anchor's candidates
OUT_OF_SCOPE = "\x00out-of-scope"
# the id prefix of a product's training pseudo-entry (retrieval train --product-queries): no
# FAQ id starts with a control character, so a product never shares a group with an entry
PRODUCT_ENTRY = "\x00product:"
MINE_BLOCK = 512  # anchors scored against every document at once


@dataclass(frozen=True)
class Anchor:
    text: str
    entry_id: str
    source: str  # "bank", "train", "feedback" or "products"
    negatives: tuple[str, ...] = field(default=())  # entry ids known to be wrong for it
    # other entries that also answer it (a product question with several right products):
    # never mined as its near misses
    related: tuple[str, ...] = field(default=())


def pool_of(entry_id: str) -> str:
    """Which texts an anchor's near misses are mined among: products among products, FAQ
    phrasings among FAQ phrasings (thousands of product texts would otherwise crowd out
    the entries an FAQ question is really confused with)."""
    return "products" if entry_id.startswith(PRODUCT_ENTRY) else "faq"


@dataclass(frozen=True)
class Batch:
    anchors: list[str]
    positives: list[str]
    negatives: list[str]
    groups: list[str]  # answer group of each anchor (its positive shares it)
    negative_groups: list[str]


def anchors_from_bank(bank: FAQBank) -> list[Anchor]:
    """Every question and example phrasing of every entry (one with a single phrasing is
    paired with its answer)."""
    out = []
    for entry in bank:
        texts = [t for v, t in entry.phrasings() if v != "answer"]
        out.extend(Anchor(t, entry.id, "bank") for t in texts)
    return out


def mine_near_misses(
    anchor_vecs: np.ndarray,
    anchor_groups: Sequence[str],
    doc_vecs: np.ndarray,
    doc_groups: Sequence[str],
    k: int = 3,
    *,
    anchor_pools: Sequence[str] | None = None,
    doc_pools: Sequence[str] | None = None,
    related: Sequence[Collection[str]] | None = None,
) -> list[list[int]]:
    """For each anchor, the ``k`` best-scoring documents of another answer group; with
    pools, only documents of the anchor's own pool; ``related[i]``: more groups that are
    right for anchor i, never its near misses.

    Vectors are L2-normalised, so the dot product is the cosine the index ranks by.
    """
    # integer codes: comparing thousands of group names per anchor as objects is slow
    code = {g: i for i, g in enumerate(dict.fromkeys(doc_groups))}
    groups = np.fromiter((code[g] for g in doc_groups), np.int64, len(doc_groups))
    pool_code = {
        p: i for i, p in enumerate(dict.fromkeys([*(doc_pools or ()), *(anchor_pools or ())]))
    }
    pools = (
        None
        if doc_pools is None or anchor_pools is None
        else np.fromiter((pool_code[p] for p in doc_pools), np.int64, len(doc_pools))
    )
    out = []
    # a block of anchors at a time: a catalog's products as documents times thousands of
    # product questions would otherwise be one matrix of gigabytes
    for start in range(0, len(anchor_groups), MINE_BLOCK):
        scores = anchor_vecs[start : start + MINE_BLOCK] @ doc_vecs.T
        for row, g in enumerate(anchor_groups[start : start + MINE_BLOCK]):
            i = start + row
            wrong = groups == code.get(g, -1)
            if pools is not None and anchor_pools is not None:
                wrong |= pools != pool_code[anchor_pools[i]]
            for other in related[i] if related is not None else ():
                wrong |= groups == code.get(other, -1)
            s = np.where(wrong, -np.inf, scores[row])
            top = np.argpartition(-s, k - 1)[:k] if 0 < k < len(s) else np.arange(len(s))
            top = top[np.lexsort((top, -s[top]))][:k]  # best first, ties: the earlier document
            out.append([int(d) for d in top if np.isfinite(s[d])])
    return out


def batches(
    anchors: Sequence[Anchor],
    bank: FAQBank,
    near_misses: Sequence[Sequence[int]],
    doc_texts: Sequence[str],
    doc_groups: Sequence[str],
    batch_size: int,
    rng: random.Random,
    out_of_scope: Sequence[str] = (),
    out_of_scope_per_batch: int = 0,
) -> Iterable[Batch]:
    """One epoch of shuffled batches; positives and negatives are drawn with ``rng``.

    The positive is another phrasing of the anchor's entry (its answer when it has no
    other); the negative is a phrasing of
    an entry agents rejected for this anchor when there is one, else a mined near miss.
    Each batch also gets ``out_of_scope_per_batch`` questions drawn from ``out_of_scope``
    (labelled questions the shop has no answer for) as negatives of every anchor, in the
    group :data:`OUT_OF_SCOPE`.
    """
    group_of = {e.id: e.group or e.id for e in bank}
    # answers are long (slow to encode) and unlike questions: pair questions with questions,
    # falling back to the answer only for an entry that has a single phrasing
    phrasings = {e.id: [t for v, t in e.phrasings() if v != "answer"] or [e.answer] for e in bank}
    answers = {e.id: e.answer for e in bank}
    order = list(range(len(anchors)))
    rng.shuffle(order)
    for start in range(0, len(order), batch_size):
        part = order[start : start + batch_size]
        if len(part) < 2:  # a lone anchor has no in-batch negatives to learn from
            continue
        a, p, n, g, ng = [], [], [], [], []
        for i in part:
            anchor = anchors[i]
            others = [t for t in phrasings[anchor.entry_id] if t != anchor.text]
            a.append(anchor.text)
            p.append(rng.choice(others) if others else answers[anchor.entry_id])
            g.append(group_of[anchor.entry_id])
            rejected = [r for r in anchor.negatives if r in phrasings]
            if rejected:
                wrong = rng.choice(rejected)
                n.append(rng.choice(phrasings[wrong]))
                ng.append(group_of[wrong])
            elif near_misses[i]:
                d = rng.choice(list(near_misses[i]))
                n.append(doc_texts[d])
                ng.append(doc_groups[d])
            else:
                wrong = rng.choice(
                    [e for e in phrasings if group_of[e] != g[-1]] or [anchor.entry_id]
                )
                n.append(rng.choice(phrasings[wrong]))
                ng.append(group_of[wrong])
        if out_of_scope and out_of_scope_per_batch > 0:
            extra = rng.sample(out_of_scope, min(out_of_scope_per_batch, len(out_of_scope)))
            n.extend(extra)
            ng.extend([OUT_OF_SCOPE] * len(extra))
        yield Batch(a, p, n, g, ng)

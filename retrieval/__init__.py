"""Customer-service answer retrieval for e-commerce shops.

Text and image queries are scored against fused product embeddings and an FAQ answer bank
held in HNSW indexes; every scored candidate is logged to SQL.
"""

from .catalog import Catalog, Product, load_catalog
from .decision import Decision, DecisionPolicy, Verdict, calibrate_threshold, decide
from .errors import RetrievalError
from .faq import FAQBank, FAQEntry, load_faq
from .fusion import Fusion, fuse, fused_scores, modality_scores
from .index import Hit, IndexParams, VectorIndex
from .product_search import ProductMatch
from .results import FAQCandidate, QueryResult
from .retriever import Retriever
from .settings import Settings, load_settings
from .snapshot import Snapshot

__all__ = [
    "Catalog",
    "Decision",
    "DecisionPolicy",
    "FAQBank",
    "FAQCandidate",
    "FAQEntry",
    "Fusion",
    "Hit",
    "IndexParams",
    "Product",
    "ProductMatch",
    "QueryResult",
    "RetrievalError",
    "Retriever",
    "Settings",
    "Snapshot",
    "VectorIndex",
    "Verdict",
    "calibrate_threshold",
    "decide",
    "fuse",
    "fused_scores",
    "load_catalog",
    "load_faq",
    "load_settings",
    "modality_scores",
]

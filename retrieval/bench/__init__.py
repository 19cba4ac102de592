"""``retrieval bench``: index, encoder and HTTP performance, measured in one run.

Modules: ``stats`` (pure maths: recall, percentiles, the ef search), ``data`` (synthetic
vectors, exact answers, memory readings), ``index``, ``encoders`` and ``http`` (the three
measurements), ``report`` (tables, Markdown, plot), ``cli`` (the command).
"""

from .stats import EfSearch, Latency, latency_summary, parse_count, recall_at_k, search_ef

__all__ = ["EfSearch", "Latency", "latency_summary", "parse_count", "recall_at_k", "search_ef"]

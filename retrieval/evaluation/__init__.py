"""Evaluation on labelled data: metrics, the FAQ and product evaluations, baselines,
dataset adapters and reports (``retrieval eval``, ``retrieval datasets``)."""

from .metrics import Outcome, summarize
from .results import Evaluation, SystemResult

__all__ = ["Evaluation", "Outcome", "SystemResult", "summarize"]

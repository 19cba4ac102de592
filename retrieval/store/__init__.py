"""The SQL store: tables, migrations and the loss-free query log."""

from .db import make_engine, migrate, migrated_engine
from .models import Base, CandidateRow, DecisionRow, IndexVersionRow, QueryRow
from .querylog import QueryLog

__all__ = [
    "Base",
    "CandidateRow",
    "DecisionRow",
    "IndexVersionRow",
    "QueryLog",
    "QueryRow",
    "make_engine",
    "migrate",
    "migrated_engine",
]

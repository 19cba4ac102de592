"""First writer wins on PostgreSQL: four agents race to answer one question."""

from __future__ import annotations

import pytest

from consoledb import first_writer_race


@pytest.mark.postgres
def test_first_writer_wins_on_postgres(pg_url: str) -> None:
    first_writer_race(pg_url)

"""Set-up shared by the training tests (tests/integration/test_training_*.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="module")
def gc_sees_only_new_objects() -> Iterator[None]:
    """Imports what training imports, then moves every object alive (pytest's, torch's,
    transformers', what earlier files left) out of the collector's sight until the file
    ends: ``fine_tune_text`` ends with a full ``gc.collect()`` to free the model's
    reference cycle, and in a test process that has imported all that, each one walks
    half a million objects (about 0.5 s a run). What the tests create is collected as
    before, so a run that leaves its model behind is still seen."""
    import sentence_transformers  # noqa: F401  (torch and transformers with it)

    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()

import pytest

from retrieval.errors import InputError
from retrieval.querytext import clean_query


def test_control_and_format_characters_become_spaces() -> None:
    assert (
        clean_query("where\x00is\u200bmy\x1b[31m order?\r\n", max_chars=100)
        == "where is my [31m order?"
    )


def test_nfc_and_whitespace() -> None:
    assert clean_query("  cafe\u0301   au   lait ", max_chars=100) == "caf\u00e9 au lait"
    assert clean_query("送货 需要 多久", max_chars=100) == "送货 需要 多久"


@pytest.mark.parametrize("text", ["", "   ", "\x00\x01\x02", "\u200b\u200e", "\n\t"])
def test_empty_queries_are_refused(text: str) -> None:
    with pytest.raises(InputError, match="empty"):
        clean_query(text, max_chars=100)


def test_too_long_queries_are_refused_before_any_work() -> None:
    with pytest.raises(InputError, match="102400 characters long; the limit is 2000"):
        clean_query("a" * 102_400, max_chars=2000)
    assert clean_query("a" * 2000, max_chars=2000) == "a" * 2000


def test_non_text_is_refused() -> None:
    with pytest.raises(InputError):
        clean_query(42, max_chars=10)  # type: ignore[arg-type]

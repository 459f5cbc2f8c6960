"""Table Storage limits are counted in UTF-16 units, as Azure counts them."""

import pytest

from azjobs.storage.table_rules import MAX_KEY_UNITS, SAFE_STRING_UNITS, fits, key_problem, utf16_units


def test_utf16_units_count_two_for_characters_past_the_bmp():
    assert utf16_units("abc") == 3
    assert utf16_units("é€") == 2
    assert utf16_units("😀") == 2
    assert utf16_units("😀" * 20_000) == 40_000
    assert utf16_units("a😀b") == len("a😀b".encode("utf-16-le")) // 2


def test_fits_refuses_emoji_text_that_fits_in_python_characters():
    text = "😀" * 20_000  # 20,000 characters, 40,000 UTF-16 units
    assert len(text) <= SAFE_STRING_UNITS
    assert not fits(text)
    assert fits("x" * SAFE_STRING_UNITS)
    assert not fits("x" * (SAFE_STRING_UNITS + 1))
    assert fits("😀" * (SAFE_STRING_UNITS // 2))
    assert not fits("😀" * (SAFE_STRING_UNITS // 2) + "x")


@pytest.mark.parametrize("key, words", [
    ("a/b", "'/'"), ("a\\b", "'\\'"), ("a#b", "'#'"), ("a?b", "'?'"), ("a\nb", "U+000A"), ("a\x85b", "U+0085"),
    ("", "empty"), ("x" * (MAX_KEY_UNITS + 1), "UTF-16 units"), ("😀" * (MAX_KEY_UNITS // 2 + 1), "UTF-16 units"),
])
def test_key_problem_names_what_table_storage_refuses(key, words):
    problem = key_problem(key)
    assert problem is not None and words in problem


def test_key_problem_accepts_ordinary_ids():
    for key in ("4b6f9a2e-0000-4000-8000-000000000000", "order-42", "x" * MAX_KEY_UNITS, "café", "😀"):
        assert key_problem(key) is None
    assert key_problem(42) is not None

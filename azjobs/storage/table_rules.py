"""Table Storage's limits, counted in the service's own units.

Azure stores strings as UTF-16: a string property holds at most 64 KiB, that is 32,768
UTF-16 code units — 32K characters only for text in the Basic Multilingual Plane; an emoji
or any other character past U+FFFF takes two units. PartitionKey and RowKey hold at most
1 KiB (512 units) and may not contain ``/``, ``\\``, ``#``, ``?`` or control characters.
Python's ``len`` counts code points, so every limit here is checked with ``utf16_units``.
"""

from __future__ import annotations

# A string property: 64 KiB of UTF-16. azjobs keeps a margin under it.
MAX_STRING_UNITS = 32 * 1024
SAFE_STRING_UNITS = 32_000
# PartitionKey and RowKey: 1 KiB of UTF-16.
MAX_KEY_UNITS = 512
# An entity: 1 MiB in all; an entity group transaction: under 4 MiB, at most 100 entities.
MAX_ENTITY_BYTES = 1024 * 1024
MAX_TRANSACTION_BYTES = 4 * 1024 * 1024
MAX_TRANSACTION_ENTITIES = 100

_FORBIDDEN_IN_KEYS = {"/": "'/'", "\\": "'\\'", "#": "'#'", "?": "'?'"}


def utf16_units(text: str) -> int:
    """How many UTF-16 code units ``text`` takes (what Azure counts): 2 for each character past U+FFFF."""
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def fits(text: str, units: int = SAFE_STRING_UNITS) -> bool:
    """True when ``text`` fits a string property of at most ``units`` UTF-16 units."""
    if len(text) > units:
        return False
    return len(text) * 2 <= units or utf16_units(text) <= units


def key_problem(key: object) -> str | None:
    """Why ``key`` cannot be a PartitionKey or RowKey, in words; None when it can."""
    if not isinstance(key, str):
        return f"it is a {type(key).__name__}, not a string"
    if not key:
        return "it is empty"
    for ch in key:
        if ch in _FORBIDDEN_IN_KEYS:
            return f"it contains {_FORBIDDEN_IN_KEYS[ch]}, which Table Storage does not allow in a key"
        if ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F:
            return f"it contains the control character U+{ord(ch):04X}"
    units = utf16_units(key)
    if units > MAX_KEY_UNITS:
        return f"it is {units:,} UTF-16 units long; a key holds at most {MAX_KEY_UNITS} (1 KiB)"
    return None


__all__ = ["MAX_ENTITY_BYTES", "MAX_KEY_UNITS", "MAX_STRING_UNITS", "MAX_TRANSACTION_BYTES",
           "MAX_TRANSACTION_ENTITIES", "SAFE_STRING_UNITS", "fits", "key_problem", "utf16_units"]

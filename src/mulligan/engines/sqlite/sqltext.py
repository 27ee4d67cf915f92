"""SQLite values as SQL literals, for the scripts diff and recover write."""

from __future__ import annotations

import math
from typing import Any


def sql_literal(v: Any) -> str:
    """A literal SQLite reads back as the same value (NaN becomes NULL, as SQLite stores it)."""
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v != v:
            return "NULL"
        if math.isinf(v):
            return "1e999" if v > 0 else "-1e999"
        return repr(v)
    if isinstance(v, bytes):
        return f"X'{v.hex()}'"
    try:
        encoded = v.encode("utf-8")
    except UnicodeEncodeError:
        encoded = v.encode("utf-8", "surrogatepass")
    if "\x00" in v or len(encoded) != len(v.encode("utf-8", "surrogatepass")):
        return f"CAST(X'{encoded.hex()}' AS TEXT)"
    return "'" + v.replace("'", "''") + "'"

"""TIME arguments: ISO 8601 (local time when no offset) or relative (-90m, -2h, -1d)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from .errors import UsageError

_RELATIVE = re.compile(r"^-(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")


def parse_time(text: str, *, now: datetime | None = None) -> datetime:
    """Return an aware UTC datetime for a TIME argument."""
    now = now or datetime.now(timezone.utc)
    raw = text.strip()
    m = _RELATIVE.match(raw)
    if m:
        return now - timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])
    candidate = raw.replace("Z", "+00:00").replace("z", "+00:00")
    try:
        value = datetime.fromisoformat(candidate)
    except ValueError:
        raise UsageError(
            f"cannot read the time {text!r}",
            hint="give ISO 8601 such as 2026-11-21T10:15:00Z or '2026-11-21 10:15:00.250+01:00', or a relative time such as -90m, -2h, -1d",
        ) from None
    if value.tzinfo is None:
        value = value.astimezone()  # machine's local time
    return value.astimezone(timezone.utc)


def parse_duration(text: str) -> timedelta:
    """'7d', '36h', '1d12h', '90m', '0.5s', '100ms' -> timedelta."""
    raw = text.strip().lower()
    pos = 0
    total = 0.0
    for m in _DURATION.finditer(raw):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(raw) or not raw:
        raise UsageError(f"cannot read the duration {text!r}", hint="use forms such as 30m, 36h, 7d or 1d12h")
    return timedelta(seconds=total)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def iso(ts: datetime | float | None) -> str | None:
    """UTC ISO 8601 with microseconds trimmed to milliseconds and a Z."""
    if ts is None:
        return None
    if isinstance(ts, (int, float)):
        ts = datetime.fromtimestamp(ts, timezone.utc)
    ts = ts.astimezone(timezone.utc)
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def from_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


def human_age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"

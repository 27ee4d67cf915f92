"""TIME arguments: ISO 8601 (local time when no offset), a time of today (09:40, 09:40:12.5,
local), or relative (-90m, -2h, -1d, '10 minutes ago')."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from .errors import UsageError

_RELATIVE = re.compile(r"^-(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_AGO = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|sec|secs|seconds?|m|min|mins|minutes?|h|hours?|d|days?|w|weeks?)\s+ago$")
_TIME_OF_DAY = re.compile(r"^\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?$")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")


def parse_time(text: str, *, now: datetime | None = None) -> datetime:
    """Return an aware UTC datetime for a TIME argument."""
    now = now or datetime.now(timezone.utc)
    raw = text.strip()
    m = _RELATIVE.match(raw) or _AGO.match(raw.lower())
    if m:
        unit = m.group(2)
        return now - timedelta(seconds=float(m.group(1)) * _UNITS["m" if unit.startswith("mi") else unit[0]])
    if _TIME_OF_DAY.match(raw):
        # Today, on this machine's clock; a time later than now is refused, not taken for yesterday
        local_now = now.astimezone()
        hour, rest = raw.split(":", 1)
        try:
            value = datetime.fromisoformat(f"{local_now.date().isoformat()}T{int(hour):02d}:{rest}")
        except ValueError:
            raise UsageError(f"cannot read the time {text!r}", hint="give a time of day as HH:MM or HH:MM:SS") from None
        value = value.replace(tzinfo=local_now.tzinfo)
        if value > local_now:
            yesterday = (local_now - timedelta(days=1)).date().isoformat()
            raise UsageError(f"{text!r} is later than now ({local_now.strftime('%H:%M:%S')} here)",
                             unchanged="nothing was read or written",
                             hint=f"give the date too, such as '{yesterday} {raw}'")
        return value.astimezone(timezone.utc)
    candidate = raw.replace("Z", "+00:00").replace("z", "+00:00")
    try:
        value = datetime.fromisoformat(candidate)
    except ValueError:
        raise UsageError(
            f"cannot read the time {text!r}",
            hint="give ISO 8601 such as 2026-11-21T10:15:00Z or '2026-11-21 10:15:00.250+01:00', a time of today "
                 "such as 10:15, or a relative time such as -90m, -2h, -1d, '10 minutes ago'",
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

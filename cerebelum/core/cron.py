"""Cron expressions in a time zone: parse once, then the next tick after any instant. Pure.

Five fields, as in crontab(5): minute (0-59), hour (0-23), day of month (1-31), month (1-12 or
jan-dec), day of week (0-7 or sun-sat; 0 and 7 are Sunday). Each field is `*`, a number, a name,
a range `a-b`, a list `a,b`, any of these with a step `/n`. When both day fields are restricted,
a day matches either (crontab's rule). Also `@hourly`, `@daily`, `@weekly`, `@monthly`,
`@yearly`.

Times are the zone's wall clock: `0 9 * * *` in Europe/Madrid is 09:00 there, summer or winter.
A wall time that does not exist (the hour skipped when clocks go forward) has no tick; one that
happens twice (the hour repeated when they go back) ticks once, at its first occurrence.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
# (name, low, high, names) per field
FIELDS = (
    ("minute", 0, 59, None),
    ("hour", 0, 23, None),
    ("day of month", 1, 31, None),
    ("month", 1, 12, MONTHS),
    ("day of week", 0, 7, DAYS),
)
# A search for the next tick gives up past this (an expression like `0 0 30 2 *` never ticks).
HORIZON_DAYS = 366 * 5


class CronError(ValueError):
    """An expression or time zone that cannot be used; the message says which part and why."""


class Cron:
    __slots__ = ("expression", "zone", "minutes", "hours", "days", "months", "weekdays",
                 "_any_day", "_any_weekday")  # fmt: skip

    def __init__(self, expression: str, zone: str = "UTC") -> None:
        text = MACROS.get(expression.strip().lower(), expression.strip())
        parts = text.split()
        if len(parts) != 5:
            raise CronError(
                f"cron expression {expression!r} has {len(parts)} fields, not 5 "
                "(minute hour day-of-month month day-of-week)"
            )
        try:
            self.zone = ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise CronError(
                f"unknown time zone {zone!r} (an IANA name, e.g. Europe/Madrid)"
            ) from None
        self.expression = expression
        sets = [_field(p, *spec) for p, spec in zip(parts, FIELDS, strict=True)]
        self.minutes, self.hours, self.days, self.months, weekdays = sets
        self.weekdays = {d % 7 for d in weekdays}
        self._any_day = parts[2] == "*"
        self._any_weekday = parts[4] == "*"

    def _day_matches(self, day: datetime) -> bool:
        weekday = (day.weekday() + 1) % 7  # Monday=0 in Python; Sunday=0 in cron
        in_days, in_weekdays = day.day in self.days, weekday in self.weekdays
        if self._any_day or self._any_weekday:
            return in_days and in_weekdays
        return in_days or in_weekdays

    def next_after(self, after_ms: int) -> int | None:
        """The first tick strictly after `after_ms` (epoch ms), as epoch ms; None if none
        within HORIZON_DAYS."""
        start = datetime.fromtimestamp(after_ms / 1000, UTC).astimezone(self.zone)
        # Wall-clock minutes, from the one after `start`; each candidate is checked against
        # the zone (a skipped wall time does not exist; a repeated one counts once).
        t = start.replace(second=0, microsecond=0, tzinfo=None) + timedelta(minutes=1)
        end = t + timedelta(days=HORIZON_DAYS)
        while t < end:
            if t.month not in self.months:
                t = _next_month(t)
                continue
            if not self._day_matches(t):
                t = (t + timedelta(days=1)).replace(hour=0, minute=0)
                continue
            if t.hour not in self.hours:
                t = (t + timedelta(hours=1)).replace(minute=0)
                continue
            if t.minute not in self.minutes:
                t += timedelta(minutes=1)
                continue
            at = _instant(t, self.zone)
            if at is not None and at * 1000 > after_ms:
                return at * 1000
            t += timedelta(minutes=1)
        return None


def _instant(wall: datetime, zone: ZoneInfo) -> int | None:
    """The epoch second of wall time `wall` in `zone` (its first occurrence), or None if the
    zone skips it."""
    local = wall.replace(tzinfo=zone, fold=0)
    back = local.astimezone(UTC).astimezone(zone)
    if back.replace(tzinfo=None) != wall:
        return None  # in a gap: clocks jumped over it
    return int(local.timestamp())


def _next_month(t: datetime) -> datetime:
    year, month = (t.year + 1, 1) if t.month == 12 else (t.year, t.month + 1)
    return datetime(year, month, 1)


def _field(text: str, name: str, low: int, high: int, names: list[str] | None) -> set[int]:
    values: set[int] = set()
    for item in text.split(","):
        base, _, step_text = item.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(f"{name}: bad step {step_text!r} in {item!r}")
            step = int(step_text)
        if base == "*":
            first, last = low, high
        elif "-" in base:
            a, _, b = base.partition("-")
            first, last = _value(a, name, low, high, names), _value(b, name, low, high, names)
            if first > last:
                raise CronError(f"{name}: range {base!r} runs backwards")
        else:
            first = _value(base, name, low, high, names)
            last = high if step_text else first
        values.update(range(first, last + 1, step))
    return values


def _value(text: str, name: str, low: int, high: int, names: list[str] | None) -> int:
    key = text.lower()
    if names is not None and key in names:
        return names.index(key) + (1 if name == "month" else 0)
    if not key.isdigit():
        raise CronError(f"{name}: {text!r} is not a number" + (f" nor a name ({', '.join(names)})"
                                                               if names else ""))  # fmt: skip
    value = int(key)
    if not low <= value <= high:
        raise CronError(f"{name}: {value} is outside {low}-{high}")
    return value

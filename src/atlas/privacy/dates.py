"""Shifting dates and checking times: the value side of the Modified Dates option.

A DA or DT value is moved by the subject's whole number of days
(:meth:`atlas.privacy.pseudonyms.SiteKey.date_shift_days`), keeping its precision, its time of
day and its UTC offset; a partial date (``YYYY``, ``YYYYMM``) is shifted from the middle of its
period, then cut back to its precision. Times of day (TM) and UTC offsets are kept as they are
once they are checked to be well formed. Age attributes are durations and are never shifted.
A value that is not of its VR's form raises :class:`InvalidInput` without the value (the engine
then gives the attribute its basic action).
"""

from __future__ import annotations

import re
from datetime import date, timedelta

from atlas.errors import InvalidInput

__all__ = ["check_time", "check_timezone", "shift_value"]

_DATE_PART = re.compile(r"(\d{4})(\d{2})?(\d{2})?")
_LEGACY_DA = re.compile(r"(\d{4})\.(\d{2})\.(\d{2})")
_DT_REST = re.compile(r"(?:\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,6})?)?)?)?(?:[+-]\d{4})?")
_TM = re.compile(r"\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,6})?)?)?|\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?")
_TZ_OFFSET = re.compile(r"[+-](?:0\d|1[0-4])[0-5]\d")


def shift_value(value: str, days: int) -> str:
    """Shift a DA or DT value by ``days``, keeping its precision, time of day and UTC offset."""
    text = value.strip()
    legacy = _LEGACY_DA.fullmatch(text)
    if legacy:
        text = "".join(legacy.groups())
    head = _DATE_PART.match(text)
    if head is None:
        raise InvalidInput("not a DICOM DA/DT value")
    year_s, month_s, day_s = head.groups()
    rest = text[head.end() :]
    if (month_s is None and day_s is None and rest) or (day_s is None and rest):
        raise InvalidInput("not a DICOM DA/DT value")
    if _DT_REST.fullmatch(rest) is None:
        raise InvalidInput("not a DICOM DA/DT value")
    try:
        # a partial date is shifted from the middle of its period, then cut back to precision
        start = date(int(year_s), int(month_s or 7), int(day_s or (15 if month_s else 2)))
        moved = start + timedelta(days=days)
    except (ValueError, OverflowError) as exc:
        raise InvalidInput("DICOM DA/DT value out of range or invalid") from exc
    if moved.year < 1:  # pragma: no cover - date() already refuses year 0
        raise InvalidInput("shifted date before year 1")
    out = f"{moved.year:04d}"
    if month_s is not None:
        out += f"{moved.month:02d}"
    if day_s is not None:
        out += f"{moved.day:02d}"
    return out + rest


def check_time(value: str) -> str:
    """``value`` if it is a DICOM TM value, else :class:`InvalidInput`."""
    if _TM.fullmatch(value.strip()) is None:
        raise InvalidInput("not a DICOM TM value")
    return value


def check_timezone(value: str) -> str:
    """``value`` if it is a UTC offset (``+HHMM``/``-HHMM``), else :class:`InvalidInput`."""
    if _TZ_OFFSET.fullmatch(value.strip()) is None:
        raise InvalidInput("not a UTC offset")
    return value

r"""Which images may carry burned-in text (names, dates, ids drawn into the pixels).

De-identifying the header does nothing for text in the pixels, so such images are quarantined
unless the operator passes ``--allow-burned-in`` after reviewing them. The rules follow RSNA
CTP's burned-in-pixels filters as packaged by the ``deid`` library (its default recipe,
``deid/data/deid.dicom``), not "every derived image": reconstructions, reformats and
projections of MR/CT (``DERIVED\SECONDARY`` in a CT or MR Image Storage object) are scanner
output without text and pass. In order, the first that applies is the reason:

1. **Burned In Annotation (0028,0301) is YES.**
2. **A known device signature**: the ``%filter graylist`` rules of the recipe that it credits
   to CTP (its ``DicomPixelAnonymizer`` signatures: manufacturer, model, image size, series
   description, ... of devices known to draw text into given regions). They apply whatever
   Burned In Annotation says: the device is known to write text.
3. Unless Burned In Annotation is **NO** (the producer states there is none):

   - a Secondary Capture SOP class (single- and multi-frame);
   - ultrasound (Modality US or an ultrasound SOP class);
   - a screen save: Image Type contains ``SAVE`` (``SCREEN SAVE``), or Series Description
     contains ``SAVE`` (CTP's burned-in-annotation filter);
   - Secondary Capture device attributes filled in (Date of Secondary Capture, Secondary
     Capture Device Manufacturer / Model Name / Software Versions): the object was captured
     from a screen, whatever its SOP class (CTP's filter passes only images where these are
     blank; the ``deid`` recipe's ``empty`` turns that test around, see decision 0018).

Rules the recipe credits to single sites (e.g. its catch-all "CT or MR with DERIVED or
SECONDARY" blacklist, or all CT of one scanner model) are not used. Recipe rules are evaluated
as ``deid`` documents them: ``contains`` is a case-insensitive regular-expression search,
``equals`` a case-insensitive comparison, ``+`` is *and*, ``||`` is *or*, left to right; a rule
that names an attribute the data set does not have does not match. Reasons name the rule, never
an original value.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

from atlas.errors import ConfigError

__all__ = ["DeviceRule", "burned_in_reason", "burned_in_risk", "device_rules", "parse_device_rules"]

_SECONDARY_CAPTURE_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image Storage
        "1.2.840.10008.5.1.4.1.1.7.1",  # Multi-frame Single Bit SC
        "1.2.840.10008.5.1.4.1.1.7.2",  # Multi-frame Grayscale Byte SC
        "1.2.840.10008.5.1.4.1.1.7.3",  # Multi-frame Grayscale Word SC
        "1.2.840.10008.5.1.4.1.1.7.4",  # Multi-frame True Color SC
    }
)
_ULTRASOUND_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.6",  # Ultrasound Image Storage (retired)
        "1.2.840.10008.5.1.4.1.1.6.1",  # Ultrasound Image Storage
        "1.2.840.10008.5.1.4.1.1.6.2",  # Enhanced US Volume Storage
        "1.2.840.10008.5.1.4.1.1.3",  # Ultrasound Multi-frame Image Storage (retired)
        "1.2.840.10008.5.1.4.1.1.3.1",  # Ultrasound Multi-frame Image Storage
    }
)
_CAPTURE_DEVICE_KEYWORDS = (
    "DateOfSecondaryCapture",
    "SecondaryCaptureDeviceManufacturer",
    "SecondaryCaptureDeviceManufacturerModelName",
    "SecondaryCaptureDeviceSoftwareVersions",
)
_ACTIONS = ("contains", "notcontains", "equals", "notequals", "missing", "empty", "present")
_INLINE = re.compile(r"\s+(\|\||\+)\s+(?=(?:" + "|".join(_ACTIONS) + r")\s)", re.IGNORECASE)
_COORDINATES = ("coordinates", "ctpcoordinates", "keepcoordinates", "ctpkeepcoordinates")
_RECIPE = ("deid.data", "deid.dicom")


@dataclass(frozen=True)
class _Test:
    action: str
    keyword: str
    value: str


_Terms = tuple[tuple[str, _Test], ...]


def _fold(terms: tuple[tuple[str, Any], ...], value: Any) -> bool:
    result = False
    for k, (op, item) in enumerate(terms):
        v = value(item)
        result = v if k == 0 else (result and v if op == "and" else result or v)
    return result


@dataclass(frozen=True)
class DeviceRule:
    """One device signature: ``lines`` of ``(operator, tests)``.

    The tests of a line are ``(operator, test)`` pairs. Both are folded left to right (a first
    operator is ignored), each line first, as ``deid`` evaluates a line's inner operators
    before the lines.
    """

    label: str
    lines: tuple[tuple[str, _Terms], ...]

    def matches(self, ds: Any) -> bool:
        """Whether ``ds`` (a pydicom data set) matches the signature."""
        return _fold(self.lines, lambda terms: _fold(terms, lambda t: _evaluate(t, ds)))


def _values(ds: Any, keyword: str) -> list[str] | None:
    """The values of ``keyword`` as text, file meta included.

    ``None`` when absent or not a keyword of the dictionary (e.g. a misspelt one in a rule).
    """
    from pydicom.datadict import tag_for_keyword

    if tag_for_keyword(keyword) is None:
        return None
    holder = ds
    if keyword not in ds:
        meta = getattr(ds, "file_meta", None)
        if meta is None or keyword not in meta:
            return None
        holder = meta
    try:
        value = holder.get(keyword)
    except Exception:
        return None
    if value is None:
        return []
    if isinstance(value, str | bytes | int | float):
        items: list[Any] = [value]
    else:
        try:
            items = list(value)
        except TypeError:
            items = [value]
    out = []
    for item in items:
        text = item.decode("latin-1") if isinstance(item, bytes) else str(item)
        out.append(text.strip())
    return [t for t in out if t]


def _evaluate(test: _Test, ds: Any) -> bool:
    values = _values(ds, test.keyword)
    if test.action == "missing":
        return values is None
    if test.action == "present":
        return values is not None
    if test.action == "empty":
        return values is not None and not values
    found = values or []
    wanted = test.value.strip().lower()
    if test.action in ("contains", "notcontains"):
        try:
            pattern = re.compile(wanted)
        except re.error:
            pattern = re.compile(re.escape(wanted))
        candidates = [*found, "\\".join(found)] if found else []
        hit = any(pattern.search(v.lower()) for v in candidates)
        return hit if test.action == "contains" else not hit
    hit = any(v.lower() == wanted for v in found)
    return hit if test.action == "equals" else not hit


def _parse_test(text: str) -> _Test | None:
    parts = text.strip().split(None, 2)
    if not parts or parts[0].lower() not in _ACTIONS or len(parts) < 2:
        return None
    action = parts[0].lower()
    value = parts[2] if len(parts) > 2 else ""
    return _Test(action, parts[1], value)


def parse_device_rules(recipe: str) -> list[DeviceRule]:
    """The CTP-credited device signatures of a ``deid`` recipe's ``%filter graylist``."""
    rules: list[DeviceRule] = []
    in_graylist = False
    label: str | None = None
    terms: list[tuple[str, _Terms]] = []

    def close() -> None:
        if label is not None and terms and "(CTP)" in label:
            name = label.split("#", 1)[0].replace("(CTP)", "").strip()
            rules.append(DeviceRule(name, tuple(terms)))

    for raw in recipe.splitlines():
        line = raw.strip()
        if line.startswith("%"):
            close()
            label, terms = None, []
            in_graylist = line.lower().replace(" ", "") == "%filtergraylist"
            continue
        if not in_graylist or not line or line.startswith("#"):
            continue
        if line.upper().startswith("LABEL "):
            close()
            label, terms = line[6:].strip(), []
            continue
        if label is None or line.lower().startswith(_COORDINATES):
            continue
        op = "and"
        if line.startswith("+"):
            line = line[1:]
        elif line.startswith("||"):
            op, line = "or", line[2:]
        pieces = _INLINE.split(line.strip())
        first = _parse_test(pieces[0])
        if first is None:
            continue
        tests = [("and", first)]
        for symbol, text in zip(pieces[1::2], pieces[2::2], strict=True):
            test = _parse_test(text)
            if test is not None:
                tests.append(("or" if symbol == "||" else "and", test))
        terms.append((op, tuple(tests)))
    close()
    return rules


@functools.cache
def device_rules() -> tuple[DeviceRule, ...]:
    """The device signatures from the installed ``deid`` package's default recipe (cached).

    Raises :class:`atlas.errors.ConfigError` when ``deid`` is not installed.
    """
    import importlib.resources

    try:
        text = importlib.resources.files(_RECIPE[0]).joinpath(_RECIPE[1]).read_text("utf-8")
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise ConfigError(
            "the burned-in-text screen needs the 'deid' package "
            "(install Atlas with the 'ingest' extras)"
        ) from exc
    rules = tuple(parse_device_rules(text))
    if not rules:
        raise ConfigError("the installed 'deid' recipe has no CTP device signatures")
    return rules


def _flag(ds: Any) -> str:
    return str(ds.get("BurnedInAnnotation", "") or "").strip().upper()


def burned_in_reason(ds: Any) -> str | None:
    """Why the pixels of ``ds`` may carry burned-in text (see the module), or ``None``."""
    flag = _flag(ds)
    if flag == "YES":
        return "Burned In Annotation is YES"
    for rule in device_rules():
        if rule.matches(ds):
            return f"known burned-in-text device signature {rule.label!r} (RSNA CTP)"
    if flag == "NO":
        return None
    sop_class = str(ds.get("SOPClassUID", "") or "").strip()
    if sop_class in _SECONDARY_CAPTURE_CLASSES:
        return "Secondary Capture image without Burned In Annotation NO"
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if modality == "US" or sop_class in _ULTRASOUND_CLASSES:
        return "ultrasound image without Burned In Annotation NO"
    image_type = [v.upper() for v in _values(ds, "ImageType") or []]
    if any("SAVE" in v for v in image_type):
        return "screen save (Image Type) without Burned In Annotation NO"
    if any("SAVE" in v.upper() for v in _values(ds, "SeriesDescription") or []):
        return "screen save (Series Description) without Burned In Annotation NO"
    if any(_values(ds, k) for k in _CAPTURE_DEVICE_KEYWORDS):
        return "Secondary Capture device attributes present without Burned In Annotation NO"
    return None


def burned_in_risk(ds: Any) -> str | None:
    r"""Why the pixels of ``ds`` may carry burned-in text, or ``None``.

    The rules (RSNA CTP's burned-in-pixels filters as packaged by the ``deid`` library: Burned
    In Annotation YES, known device signatures, and, unless Burned In Annotation is NO,
    Secondary Capture, ultrasound, screen saves and screen-capture devices) are those of
    :func:`burned_in_reason`; a ``DERIVED\SECONDARY`` MR or CT reconstruction is not a risk.
    The reason names no original value.
    """
    return burned_in_reason(ds)

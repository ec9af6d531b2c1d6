r"""Text that is safe to write and to print: no terminal control characters.

A value read from an input file (a DICOM attribute, an ROI name, a third-party error message
that quotes one) may carry characters that act on whoever looks at it later: ESC and CSI
sequences that move the cursor, recolour, retitle or clear a terminal; other C0 and C1
controls (BEL, BS, CR tricks that overwrite a line); Unicode format characters such as the
bidirectional overrides (U+202E "RIGHT-TO-LEFT OVERRIDE") and zero-width characters that make
text read differently from what it is. None of them carries meaning in a stored descriptor.

Two functions, for two audiences:

- :func:`printable` **removes** them: for values Atlas stores (image and label metadata,
  staging records, the index). TAB, LF and CR survive in multi-line text only; elsewhere
  they, VT and FF become a space.
- :func:`visible` **replaces** them with a visible escape (``\x1b``, ``\u202e``; C0 white
  space with a space): for operator-facing text (the quarantine report, CLI output), where
  the exact value may matter (a file name) but must not act on the terminal.

"Control" here means the Unicode categories ``Cc`` (C0, DEL, C1), ``Cf`` (format: bidi
controls, zero-width characters, BOM ...) and ``Cs`` (lone surrogates, from undecodable
bytes).
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["has_controls", "printable", "visible"]

_CONTROL_CATEGORIES = frozenset({"Cc", "Cf", "Cs"})
_LINE_CHARS = frozenset("\t\n\r")
#: C0 white space: becomes one space where it is not kept
_SPACE_CHARS = frozenset("\t\n\r\v\f")
#: ANSI/ECMA-48 escape sequences: CSI (ESC [ or U+009B ... final byte), OSC/DCS/PM/APC/SOS
#: strings (up to BEL or ST), and two-character ESC sequences
_ANSI = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[ -/]*[0-~]"
)


def _is_control(ch: str) -> bool:
    return unicodedata.category(ch) in _CONTROL_CATEGORIES


def has_controls(text: str, *, multiline: bool = False) -> bool:
    """Whether :func:`printable` would change ``text``."""
    return any(_is_control(ch) and not (multiline and ch in _LINE_CHARS) for ch in text)


def printable(text: str, *, multiline: bool = False) -> str:
    """``text`` without control characters (TAB, LF and CR kept when ``multiline``).

    Whole ANSI escape sequences go (``ESC [ 31 m``, ``ESC ] 0 ; title BEL``), not only their
    ESC, so no parameter text of a sequence is left behind.
    """
    if text.isprintable():
        return text
    text = _ANSI.sub("", text)
    out = []
    for ch in text:
        if not _is_control(ch) or (multiline and ch in _LINE_CHARS):
            out.append(ch)
        elif ch in _SPACE_CHARS:
            out.append(" ")
    return "".join(out)


def visible(text: str) -> str:
    r"""``text`` with every control character replaced by a visible escape (``\x1b``)."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch in _SPACE_CHARS:
            out.append(" ")
        elif _is_control(ch):
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)

"""How many SMS parts a body needs, and in which encoding (GSM 03.38 or UCS-2): pure, no I/O."""

from __future__ import annotations

from typing import Final

# GSM 03.38 basic character set (the escape character 0x1B itself is not a character a user writes).
GSM7_BASIC: Final = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# Extension table: each is sent as ESC + character, so it costs two septets.
GSM7_EXTENSION: Final = frozenset("^{}\\[~]|€\f")

GSM7: Final = "GSM-7"
UCS2: Final = "UCS-2"
# Units (septets for GSM-7, UTF-16 code units for UCS-2) in a lone SMS and in each part of a long
# one (a concatenated part loses room to its user data header).
SINGLE: Final = {GSM7: 160, UCS2: 70}
PER_PART: Final = {GSM7: 153, UCS2: 67}


def encoding_of(body: str) -> str:
    """GSM-7 when every character is in the GSM basic or extension table, else UCS-2."""
    if all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in body):
        return GSM7
    return UCS2


def _units(char: str, encoding: str) -> int:
    if encoding == GSM7:
        return 2 if char in GSM7_EXTENSION else 1
    # Characters beyond the BMP (most emoji) are a UTF-16 surrogate pair.
    return 2 if ord(char) > 0xFFFF else 1


def count_segments(body: str) -> tuple[int, str]:
    """(parts, encoding) for `body`: GSM-7 160 / 153 per part, UCS-2 70 / 67 per part.

    An escape sequence (GSM extension character) or a surrogate pair is never split across parts,
    as handsets and providers pack them, so a part may carry one unit less than its room.
    """
    encoding = encoding_of(body)
    units = [_units(c, encoding) for c in body]
    if sum(units) <= SINGLE[encoding]:
        return 1, encoding
    room = PER_PART[encoding]
    parts, used = 1, 0
    for size in units:
        if used + size > room:
            parts, used = parts + 1, 0
        used += size
    return parts, encoding

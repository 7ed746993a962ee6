"""How many SMS parts the providers bill for a body: GSM-7 160/153 septets, UCS-2 70/67 units.

Counted as Twilio documents it (what-sms-character-limit, what-is-ucs-2-character-encoding): a body
stays GSM-7 unless a character is in neither GSM 03.38 table, and only then is the whole body
UCS-2. Kept apart from `shared.segments` on purpose: the simulator stands alone (the import
contract), and two independent counts agreeing is itself a check
(tests/unit/test_simulator_segments.py).
"""

from __future__ import annotations

from typing import Final

# 3GPP TS 23.038 basic table (0x1B, the escape, is not a character anyone writes).
GSM7_BASIC: Final = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# Extension table: sent as ESC + character, two septets each.
GSM7_EXTENSION: Final = frozenset("^{}\\[~]|€\f")

GSM7_SINGLE, GSM7_PART = 160, 153  # septets; a part of a long message loses 7 to its header
UCS2_SINGLE, UCS2_PART = 70, 67  # UTF-16 code units


def is_gsm7(body: str) -> bool:
    """Whether every character is in the GSM-7 basic or extension table."""
    return all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in body)


def count(body: str) -> int:
    """The number of parts `body` is sent (and billed) as.

    An escape pair or a UTF-16 surrogate pair never straddles two parts, so a part may hold one
    unit less than its room.
    """
    if is_gsm7(body):
        units = [2 if c in GSM7_EXTENSION else 1 for c in body]
        single, room = GSM7_SINGLE, GSM7_PART
    else:
        units = [2 if ord(c) > 0xFFFF else 1 for c in body]  # astral: a surrogate pair
        single, room = UCS2_SINGLE, UCS2_PART
    if sum(units) <= single:
        return 1
    parts, used = 1, 0
    for size in units:
        if used + size > room:
            parts, used = parts + 1, 0
        used += size
    return parts

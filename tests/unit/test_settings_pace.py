"""Settings of issue 12: SENDER_DEFAULT_MPS (with the burst it implies) and QUIET_HOURS."""

from __future__ import annotations

from datetime import time

import pytest

from shared.config import default_burst, load_settings
from shared.errors import ConfigError
from shared.quiet import QuietHours


def test_defaults() -> None:
    """Unset: one segment per second, no quiet hours."""
    settings = load_settings({})
    assert settings.sender_default_mps == 1.0
    assert settings.quiet_hours is None


@pytest.mark.parametrize(("raw", "mps"), [("2.5", 2.5), (" 30 ", 30.0), ("10000", 10000.0)])
def test_sender_default_mps(raw: str, mps: float) -> None:
    """SENDER_DEFAULT_MPS is a number of segments per second, up to 10000."""
    assert load_settings({"SENDER_DEFAULT_MPS": raw}).sender_default_mps == mps


@pytest.mark.parametrize("raw", ["0", "-1", "10000.5", "nan", "inf", "fast", "0.0001"])
def test_sender_default_mps_refused(raw: str) -> None:
    """Zero, negative, above 10000, not finite, not a number or absurdly slow: refused by name."""
    with pytest.raises(ConfigError, match="SENDER_DEFAULT_MPS"):
        load_settings({"SENDER_DEFAULT_MPS": raw})


@pytest.mark.parametrize(
    ("mps", "burst"), [(0.001, 1), (0.5, 1), (1.0, 1), (1.5, 2), (30.0, 30), (10000.0, 10000)]
)
def test_default_burst(mps: float, burst: int) -> None:
    """The burst is max(1, ceil(mps)): one second's worth, never below one segment."""
    assert default_burst(mps) == burst


@pytest.mark.parametrize(
    ("raw", "window"),
    [
        ("21:00-08:00", QuietHours(time(21), time(8))),
        ("01:00-05:00", QuietHours(time(1), time(5))),
        ("", None),
        ("  ", None),
    ],
)
def test_quiet_hours(raw: str, window: QuietHours | None) -> None:
    """QUIET_HOURS is HH:MM-HH:MM, wrapping midnight or not; empty turns it off."""
    assert load_settings({"QUIET_HOURS": raw}).quiet_hours == window


@pytest.mark.parametrize("raw", ["21:00", "21-08", "21:00-21:00", "24:00-08:00", "night"])
def test_quiet_hours_refused(raw: str) -> None:
    """A malformed or empty window is refused with QUIET_HOURS named, in one line."""
    with pytest.raises(ConfigError, match="QUIET_HOURS") as caught:
        load_settings({"QUIET_HOURS": raw})
    assert "\n" not in str(caught.value)

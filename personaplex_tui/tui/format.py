"""Short human formats for the UI: sizes, rates, durations, levels."""

from __future__ import annotations

import math


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KB'; decimal units, as download sizes are usually shown."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def human_rate(bytes_per_s: float) -> str:
    return f"{human_bytes(bytes_per_s)}/s"


def human_duration(seconds: float | None) -> str:
    """75 -> '1:15', 3725 -> '1:02:05'; '--:--' when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "--:--"
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def db_text(db: float) -> str:
    """A level for a meter, e.g. '-23.4'; '-inf' under -99 dB."""
    return "-inf" if db <= -99 else f"{db:5.1f}"


def echo_text(mode: str, delay_ms: float | None, erle_db: float | None) -> str:
    """The level panel's bottom line: how the agent's voice is kept out of the mic, e.g.
    `ERLE 31 dB · delay 312 ms` while the echo canceller runs."""
    if mode == "mute":
        return "echo: mic muted while agent talks"
    if mode != "cancel":
        return ""
    erle = "–" if erle_db is None else f"{erle_db:.0f} dB"
    delay = "–" if delay_ms is None else f"{delay_ms:.0f} ms"
    return f"ERLE {erle} · delay {delay}"

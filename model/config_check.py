"""Checked reads of a checkpoint's config.json: every bad value is a CheckpointError naming its key.

`Section` wraps one JSON object; its getters return the value (or the default when the key is
absent) converted and range-checked, so that the config dataclasses are only ever built from
sane numbers and a corrupt or foreign config.json ends in one sentence, never a KeyError.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from model.errors import CheckpointError


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class Section:
    """A JSON object of config.json; `where` is its dotted name ("" for the top level)."""

    def __init__(self, data: Mapping[str, Any], where: str = "") -> None:
        self.data = data
        self.where = where

    @classmethod
    def top(cls, data: Any) -> Section:
        if not isinstance(data, Mapping):
            raise CheckpointError(f"The configuration must be a JSON object, not {_shown(data)}.")
        return cls(data)

    def name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def fail(self, key: str, wanted: str, value: Any) -> CheckpointError:
        return CheckpointError(f"'{self.name(key)}' must be {wanted}, not {_shown(value)}.")

    def has(self, key: str) -> bool:
        return key in self.data and self.data[key] is not None

    def section(self, key: str) -> Section:
        """A sub-object (absent or null: empty)."""
        value = self.data.get(key)
        if value is None:
            return Section({}, self.name(key))
        if not isinstance(value, Mapping):
            raise self.fail(key, "a JSON object", value)
        return Section(value, self.name(key))

    def integer(self, key: str, default: int | None, low: int = 1, high: int | None = None) -> int:
        """A whole number in low..high (floats with no fraction are taken; None: required)."""
        value = self.data.get(key, default)
        return self.check_integer(key, value, low, high)

    def check_integer(self, key: str, value: Any, low: int = 1, high: int | None = None) -> int:
        wanted = (
            f"a whole number from {low} to {high}"
            if high is not None
            else (f"a whole number of at least {low}")
        )
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(key, wanted, value)
        if isinstance(value, float):
            if not math.isfinite(value) or not value.is_integer():
                raise self.fail(key, wanted, value)
            value = int(value)
        if value < low or (high is not None and value > high):
            raise self.fail(key, wanted, value)
        return int(value)

    def number(
        self,
        key: str,
        default: float,
        low: float | None = 0.0,
        positive: bool = False,
        high: float | None = None,
    ) -> float:
        """A finite number, at least `low` (above 0 when `positive`), at most `high` if given."""
        value = self.data.get(key, default)
        wanted = (
            "a positive number"
            if positive
            else ("a finite number" if low is None else f"a number of at least {low}")
        )
        if high is not None and low is not None and not positive:
            wanted = f"a number from {low} to {high}"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(key, wanted, value)
        value = float(value)
        if (
            not math.isfinite(value)
            or (positive and value <= 0)
            or (low is not None and value < low)
            or (high is not None and value > high)
        ):
            raise self.fail(key, wanted, value)
        return value

    def integers(
        self, key: str, default: tuple[int, ...], low: int = 1, high: int | None = None
    ) -> tuple[int, ...]:
        """A non-empty list of whole numbers, each in low..high."""
        value = self.data.get(key, default)
        if not isinstance(value, (list, tuple)) or not value:
            raise self.fail(key, "a non-empty list of whole numbers", value)
        return tuple(self.check_integer(key, item, low, high) for item in value)

    def strings(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        """A list of strings."""
        value = self.data.get(key, default)
        if value is None:
            return default
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise self.fail(key, "a list of names", value)
        return tuple(value)

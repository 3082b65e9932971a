"""Shared fixtures: a small checkpoint of random weights in the real on-disk layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.checkpoints import write_small_checkpoint


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete small checkpoint (voices NATF2, VARF2, NATM0), written once per test run."""
    return write_small_checkpoint(tmp_path_factory.mktemp("small-ckpt"))

"""Shared fixtures: a small checkpoint of random weights in the real on-disk layout, and the
models (fake and tiny real) the conversation tests run against."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.checkpoints import write_small_checkpoint
from tests.conversation_fakes import MODEL_FACTORIES


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete small checkpoint (voices NATF2, VARF2, NATM0), written once per test run."""
    return write_small_checkpoint(tmp_path_factory.mktemp("small-ckpt"))


@pytest.fixture(params=sorted(MODEL_FACTORIES))
def make_model(request: pytest.FixtureRequest, small_checkpoint: Path) -> Callable[[], object]:
    """A function making the model; `Probe` calls it in the loader, on the engine thread."""
    return lambda: MODEL_FACTORIES[request.param](small_checkpoint)

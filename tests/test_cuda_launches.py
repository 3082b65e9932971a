"""MLX's CUDA kernels launched directly, not as CUDA graphs: set by the app unless the user chose."""

from __future__ import annotations

import os

import pytest

from model.cuda.cubins import ENV_CACHE
from personaplex_tui.cli import main
from personaplex_tui.cuda_launches import ENV_VAR, cuda_graphs, launch_directly
from personaplex_tui.kernel_cache import ENV_VAR as PTX_CACHE


@pytest.fixture
def clean_env(monkeypatch):
    """The variables the CLI sets, absent now and put back as they were afterwards."""
    for name in (ENV_VAR, PTX_CACHE, ENV_CACHE):
        monkeypatch.setenv(name, "placeholder")  # records the original value for the teardown
        monkeypatch.delenv(name)


def test_turns_cuda_graphs_off_when_unset(clean_env):
    assert launch_directly() is True
    assert os.environ[ENV_VAR] == "0"


@pytest.mark.parametrize("choice", ["1", "0", ""])
def test_keeps_the_users_choice(clean_env, monkeypatch, choice):
    monkeypatch.setenv(ENV_VAR, choice)
    assert launch_directly() is False
    assert os.environ[ENV_VAR] == choice


def test_every_command_sets_it_before_it_runs(clean_env, capsys):
    assert main(["prompts"]) == 0
    assert "assistant" in capsys.readouterr().out
    assert os.environ[ENV_VAR] == "0"


@pytest.mark.parametrize(
    ("value", "mode"), [(None, "on"), ("0", "off"), ("1", "on"), ("00", "off"), ("yes", "on")]
)
def test_reports_the_mode_as_mlx_reads_the_variable(clean_env, monkeypatch, value, mode):
    if value is not None:
        monkeypatch.setenv(ENV_VAR, value)
    assert cuda_graphs() == mode

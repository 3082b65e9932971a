# Task runner for ppx-tui. `./dev <recipe>` bootstraps .venv and `just` first.

set shell := ["bash", "-euo", "pipefail", "-c"]

venv := ".venv"
py := venv + "/bin/python"
pip := py + " -m pip install -q --disable-pip-version-check"
# The numerical reference for the tests (PyTorch `moshi`); torch is a test-only dependency.
torch_spec := env_var_or_default("TORCH_SPEC", "torch==2.13.0")

# Start the app (chat TUI). Example: ./dev app --mode duplex --voice VARF2
app *ARGS: setup
    {{venv}}/bin/ppx-tui {{ARGS}}

# Run the test suite. Example: ./dev test -k mimi
test *ARGS: setup-test
    {{py}} -m pytest {{ARGS}}

# Lint, format check and the import contracts of pyproject.toml ([tool.importlinter]).
lint: setup-test
    {{venv}}/bin/ruff check model personaplex_tui tests benchmarks .ci
    {{venv}}/bin/ruff format --check model personaplex_tui tests benchmarks .ci
    {{venv}}/bin/lint-imports

# PyPI has wheels of every dependency for macOS arm64 and Linux x86_64, Python 3.10-3.13 (CI).
check-wheels: setup-test
    {{py}} .ci/check_wheels.py

# Benchmark the step (see README). Examples: ./dev bench --small, ./dev bench --random-weights
bench *ARGS: setup
    {{venv}}/bin/ppx-tui bench {{ARGS}}

# The tuned echo canceller is WebRTC's audio processing built from source into the venv
# (minutes, once: audio/apm_build.py); where it cannot be built, livekit's is used.
# Runtime install: system audio library where needed, the package, the tuned echo canceller.
setup: system-deps
    @[ -x {{py}} ] || python3 -m venv {{venv}}
    {{pip}} -e .
    @if [ "$(uname -s)" = Linux ] && command -v nvidia-smi >/dev/null 2>&1 && [ -z "${PPX_CPU_ONLY:-}" ]; then \
        echo "NVIDIA GPU found: installing MLX's CUDA backend"; \
        {{py}} -m pip uninstall -q -y mlx-cpu; {{pip}} "mlx[cuda13]"; fi
    {{pip}} meson ninja || true
    {{py}} -m personaplex_tui.audio.apm_build --if-possible --quiet

# Test install: the runtime plus pytest, Textual snapshots and the PyTorch reference. The tests
# measure the tuned echo canceller, so here a failed build of it fails (and is tried again).
setup-test: setup
    {{pip}} -e ".[test]"
    {{pip}} "{{torch_spec}}"
    {{pip}} --no-deps "moshi==0.2.13"
    {{py}} -m personaplex_tui.audio.apm_build

# PortAudio (for sounddevice), the audio tools the tests use and a C++ compiler (it builds
# WebRTC's audio processing), on Debian/Ubuntu. PulseAudio and ALSA's pulse plugin give the
# tests a virtual sound card (a null sink and its monitor).
system-deps:
    #!/usr/bin/env bash
    set -euo pipefail
    [ "$(uname -s)" = Linux ] || exit 0
    need=()
    ldconfig -p | grep -q 'libportaudio.so.2' || need+=(libportaudio2)
    command -v tmux >/dev/null || need+=(tmux)
    command -v pulseaudio >/dev/null || need+=(pulseaudio)
    dpkg -s libasound2-plugins >/dev/null 2>&1 || need+=(libasound2-plugins)
    command -v c++ >/dev/null || command -v g++ >/dev/null || command -v clang++ >/dev/null || need+=(g++)
    [ ${#need[@]} -eq 0 ] && exit 0
    if ! command -v apt-get >/dev/null; then
        echo "Please install: ${need[*]} (PortAudio is needed for sound I/O)"; exit 0
    fi
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "Installing system packages: ${need[*]}"
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null

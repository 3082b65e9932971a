"""No module of `model` keeps a lazy MLX array made at import: the engine evaluates on its own
thread, where such an array fails ("There is no Stream(...) in current thread").

The depformer kernel's two placeholder inputs were lazy `mx.zeros` made at import; on the GPU the
kernel's load-time check then failed on the engine thread, and the app ran MLX's depformer
while `bench` (one thread) showed the kernel on. Found by `ppx-tui soak --random-weights` on
an H200.
"""

from __future__ import annotations

import importlib
import pkgutil
import threading

import mlx.core as mx

import model


def _in_another_thread(fn) -> BaseException | None:
    caught: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 - reported by the test
            caught.append(e)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    return caught[0] if caught else None


def _module_arrays() -> dict[str, mx.array]:
    found = {}
    for info in pkgutil.walk_packages(model.__path__, "model."):
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if isinstance(value, mx.array):
                found[f"{info.name}.{name}"] = value
    return found


def test_a_lazy_array_from_the_import_thread_fails_on_another_thread():
    lazy = mx.zeros((1,), dtype=mx.int32)  # what the check below looks for
    error = _in_another_thread(lambda: mx.eval(lazy + 1))
    assert error is not None and "Stream" in str(error)
    assert _in_another_thread(lambda: mx.eval(mx.array([0]) + 1)) is None  # data is fine


def test_every_module_level_array_of_model_evaluates_on_another_thread():
    arrays = _module_arrays()
    assert "model.cuda.depformer._NO_INT" in arrays  # the walk reaches the kernels' modules
    failed = {}
    for name, value in arrays.items():
        error = _in_another_thread(lambda v=value: mx.eval(v + 0))
        if error is not None:
            failed[name] = str(error)
    assert failed == {}

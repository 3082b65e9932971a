"""A step's frame and tokens through page-locked host memory, so that the host never writes or reads MLX's managed buffers.

MLX 0.32 on CUDA puts an array made from host data (`mx.array(pcm)`) in managed memory, and
reading an output on the host (`np.array(out)`, `.item()`) moves it into a new managed buffer
(`cudaMallocManaged` and a copy), which MLX's cache later hands to a kernel's output. The host
touched those pages last, so the GPU's next touch faults them over: about 0.1-0.2 ms of GPU time
per step, and the host's allocations and copies on top (docs/cuda-kernels.md §The step's I/O
through page-locked memory). Here each session owns one small page-locked buffer, mapped for the
GPU (`cuMemHostAlloc`): the host writes the frame (or the user's codes) into it and a kernel copies
them into an MLX array; at the step's end one kernel writes the text token, the agent's and the
user's codes, the output frame and, when the session transcribes the user, the STT's text token
and end-of-turn probabilities back into it, and the host reads them there after the step's one
wait. Nothing else of the step changes. `PPX_HOST_IO=managed` turns it off.

The wait itself: MLX waits for a step with `cudaEventSynchronize` on an event made with
`cudaEventBlockingSync`, so the host thread sleeps until the driver's interrupt wakes it. The
write-back kernel also sets a flag word in the buffer once everything it wrote is visible to the
host, so the session can instead launch the step (`mx.async_eval`) and poll that word, yielding
the GIL between polls (`wait_written`; docs/cuda-kernels.md §The step's end polled).
`PPX_HOST_WAIT=block` keeps MLX's wait.
"""

from __future__ import annotations

import ctypes
import os
import time
import weakref
from typing import Any

import mlx.core as mx
import numpy as np

from model.backend import on_cuda
from model.cuda import precompiled
from model.cuda.env_switch import says

ENV_SWITCH = "PPX_HOST_IO"
ENV_WAIT = "PPX_HOST_WAIT"
THREADS = 128
OUT_THREADS = 1024  # the write-back is one block, so one thread can raise the flag after all
WAIT_LIMIT_S = 1.0  # polled this long, the wait falls back to MLX's (which reports errors)
# gives the GIL up between polls: 0.4 µs; time.sleep(0) sleeps out Linux's timer slack (~75 µs)
_give_way = getattr(os, "sched_yield", lambda: time.sleep(0))

# The buffer's layout, in 4-byte words: what the host writes, then what the step writes back.
CODES_IN, TEXT_OUT, CODES_OUT, USER_OUT = 0, 16, 17, 32  # up to 15 codes each, 32 of the user's
HEARD_OUT, EOT_OUT = 64, 65  # the STT's text token, then up to 15 end-of-turn probabilities
PCM_IN = 80
_CU_MEMHOSTALLOC_PORTABLE_DEVICEMAP = 0x1 | 0x2

_IN_SOURCE = """
    const {t}* h = (const {t}*)(ptr[0]) + {offset};
    unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < {n}) out[i] = h[i];
"""

_OUT_SOURCE = """
    int* h = (int*)(ptr[0]);
    float* f = (float*)(ptr[0]);
    for (unsigned i = threadIdx.x; i < N_ALL; i += blockDim.x) {
        if (i == 0) h[TEXT_OUT] = (int)text[0];
        if (i < N_CODES) h[CODES_OUT + i] = (int)codes[i];
        if (i < N_USER) h[USER_OUT + i] = (int)user[i];
        if (i < N_PCM) f[PCM_OUT + i] = (float)pcm[i];
        if (HEARD && i == 0) h[HEARD_OUT] = (int)heard[0];
        if (i < N_EOT) f[EOT_OUT + i] = (float)eot[i];
    }
    __threadfence_system();  // each thread's writes reach the host before the flag below
    __syncthreads();
    if (threadIdx.x == 0) {
        __threadfence_system();
        ((volatile int*)h)[DONE_OUT] = 1;
        done[0] = 1;
    }
"""


def switched_on() -> bool:
    """`$PPX_HOST_IO` does not say managed (or off)."""
    return not says(ENV_SWITCH, "managed", "off", "0", "no")


def polls_written() -> bool:
    """`$PPX_HOST_WAIT` does not say block: a step's end is polled in the buffer."""
    return not says(ENV_WAIT, "block", "mlx", "off", "0", "no")


def _driver() -> Any:
    lib = ctypes.CDLL("libcuda.so.1")
    lib.cuMemHostAlloc.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t, ctypes.c_uint]
    lib.cuMemFreeHost.argtypes = [ctypes.c_void_p]
    lib.cuMemHostGetDevicePointer_v2.argtypes = [
        ctypes.POINTER(ctypes.c_uint64),
        ctypes.c_void_p,
        ctypes.c_uint,
    ]
    return lib


class PinnedIO:
    """One session's page-locked buffer and the kernels that move a step's data through it.

    `frame_in`/`codes_in` write the host's data and return the array a kernel copies it into
    (lazy); `written_back` returns the lazy token of the kernel that writes a step's results
    back, to evaluate with the step; after that wait `text`, `codes`, `user`, `pcm`, `heard`
    and `end_of_turn` read them (copies). `wait_written` polls for that kernel's end."""

    def __init__(self, frame_size: int) -> None:
        self.frame_size = frame_size
        self._done = PCM_IN + 2 * frame_size  # the flag word the write-back raises last
        self._words = self._done + 4
        lib = _driver()
        host = ctypes.c_void_p()
        if lib.cuMemHostAlloc(
            ctypes.byref(host), 4 * self._words, _CU_MEMHOSTALLOC_PORTABLE_DEVICEMAP
        ):
            raise OSError("cuMemHostAlloc failed")
        weakref.finalize(self, lib.cuMemFreeHost, host.value)
        device = ctypes.c_uint64()
        if lib.cuMemHostGetDevicePointer_v2(ctypes.byref(device), host, 0):
            raise OSError("cuMemHostGetDevicePointer failed")
        raw = (ctypes.c_char * (4 * self._words)).from_address(host.value)
        self._i32 = np.frombuffer(raw, dtype=np.int32)
        self._f32 = np.frombuffer(raw, dtype=np.float32)
        self._ptr = mx.array(np.array([device.value], dtype=np.int64))
        self._none = mx.zeros((1,), dtype=mx.int32)  # in place of an output not written back
        mx.eval(self._ptr, self._none)
        self._pcm_out = PCM_IN + frame_size
        self._in = {}
        self._out: dict[tuple[int, int, int, int, int], Any] = {}

    def _copy_in(self, offset: int, n: int, dtype: mx.Dtype) -> mx.array:
        key = (offset, n, dtype)
        if key not in self._in:
            t = "float" if dtype == mx.float32 else "int"
            self._in[key] = precompiled.make_kernel(
                name=f"ppx_host_in_{t}_{offset}_{n}",
                input_names=["ptr"],
                output_names=["out"],
                source=_IN_SOURCE.format(t=t, offset=offset, n=n),
            )
        return self._in[key](
            inputs=[self._ptr],
            output_shapes=[(n,)],
            output_dtypes=[dtype],
            grid=(-(-n // THREADS) * THREADS, 1, 1),
            threadgroup=(THREADS, 1, 1),
        )[0]

    def frame_in(self, pcm: np.ndarray) -> mx.array:
        """One frame of float samples, written here, as a float32 array (lazy)."""
        self._f32[PCM_IN : PCM_IN + self.frame_size] = pcm
        return self._copy_in(PCM_IN, self.frame_size, mx.float32)

    def codes_in(self, codes: np.ndarray) -> mx.array:
        """The user's codes, written here, as an int32 array (lazy)."""
        self.put_codes(codes)
        return self.codes_later(len(codes))

    def put_codes(self, codes: np.ndarray) -> None:
        """Write the user's codes for an array of `codes_later` (before its step is launched)."""
        self._i32[CODES_IN : CODES_IN + len(codes)] = codes

    def codes_later(self, n: int) -> mx.array:
        """The int32 array that a kernel copies `n` user codes into when its step runs (lazy):
        a step built ahead of its codes reads what `put_codes` wrote before it was launched."""
        return self._copy_in(CODES_IN, n, mx.int32)

    def written_back(
        self,
        text: mx.array,
        codes: mx.array,
        user: mx.array | None = None,
        pcm: mx.array | None = None,
        heard: tuple = (),
        *,
        arm: bool = True,
    ) -> mx.array:
        """The lazy token of the kernel that writes the step's text token, codes, user codes
        (optional), output frame (optional) and what the STT heard (optional: its text token
        and end-of-turn probabilities) back here; evaluate it with the step. Lowers the flag
        that kernel raises (`arm`); `arm=False` for a step built while another runs, whose
        caller arms it when it launches the step."""
        self._n_codes = codes.size
        self._n_user = 0 if user is None else user.size
        self._n_eot = heard[1].size if heard else 0
        n_pcm = 0 if pcm is None else pcm.size
        if self._n_codes > USER_OUT - CODES_OUT or self._n_user > HEARD_OUT - USER_OUT:
            raise ValueError("more codes than the page-locked buffer holds")
        if self._n_eot > PCM_IN - EOT_OUT:
            raise ValueError("more end-of-turn heads than the page-locked buffer holds")
        if n_pcm > self.frame_size:
            raise ValueError("a longer frame than the page-locked buffer holds")
        key = (self._n_codes, self._n_user, n_pcm, int(bool(heard)), self._n_eot)
        if arm:
            self.arm()
        if key not in self._out:
            self._out[key] = write_back_kernel(key, self._pcm_out, self._done)
        return self._out[key](
            inputs=[
                self._ptr,
                text.reshape(1),
                codes.reshape(-1),
                self._none if user is None else user.reshape(-1),
                self._none if pcm is None else pcm.reshape(-1),
                heard[0].reshape(1) if heard else self._none,
                heard[1].reshape(-1) if heard else self._none,
            ],
            output_shapes=[(1,)],
            output_dtypes=[mx.int32],
            grid=(OUT_THREADS, 1, 1),
            threadgroup=(OUT_THREADS, 1, 1),
        )[0]

    def arm(self) -> None:
        """Lower the flag before a step whose write-back `wait_written` will poll for (the
        last step's write-back has ended: its flag was seen, or MLX waited for it)."""
        self._i32[self._done] = 0

    def wait_written(self, limit_s: float = WAIT_LIMIT_S) -> bool:
        """Poll until the write-back kernel raised its flag, giving the GIL up between polls;
        False after `limit_s` (the caller then waits as MLX does, which raises the GPU's errors)."""
        flag, done = self._i32, self._done
        if flag[done]:
            return True
        deadline = time.perf_counter() + limit_s
        while not flag[done]:
            _give_way()
            if time.perf_counter() > deadline:
                return bool(flag[done])
        return True

    def text(self) -> int:
        """The step's text token, after the wait."""
        return int(self._i32[TEXT_OUT])

    def codes(self) -> np.ndarray:
        """The step's agent codes (int32 copy), after the wait."""
        return self._i32[CODES_OUT : CODES_OUT + self._n_codes].copy()

    def user(self) -> np.ndarray:
        """The step's user codes (int32 copy), after the wait."""
        return self._i32[USER_OUT : USER_OUT + self._n_user].copy()

    def pcm(self) -> np.ndarray:
        """The step's output frame (float32 copy), after the wait."""
        return self._f32[self._pcm_out : self._pcm_out + self.frame_size].copy()

    def heard(self) -> int:
        """The STT's text token of the step, after the wait."""
        return int(self._i32[HEARD_OUT])

    def end_of_turn(self) -> tuple[float, ...]:
        """The STT's end-of-turn probabilities of the step, after the wait."""
        return tuple(float(p) for p in self._f32[EOT_OUT : EOT_OUT + self._n_eot])


def write_back_kernel(key: tuple[int, int, int, int, int], pcm_out: int, done: int) -> Any:
    """The write-back kernel for (codes, user codes, samples, whether the STT's token, its
    end-of-turn heads), writing the frame from word `pcm_out` and raising the flag at `done`."""
    defines = (
        f"#define TEXT_OUT {TEXT_OUT}\n#define CODES_OUT {CODES_OUT}\n"
        f"#define USER_OUT {USER_OUT}\n#define PCM_OUT {pcm_out}\n"
        f"#define HEARD_OUT {HEARD_OUT}\n#define EOT_OUT {EOT_OUT}\n"
        f"#define N_CODES {key[0]}\n#define N_USER {key[1]}\n#define N_PCM {key[2]}\n"
        f"#define HEARD {key[3]}\n#define N_EOT {key[4]}\n"
        f"#define DONE_OUT {done}\n#define N_ALL {max(*key[:3], key[4], 1)}\n"
    )
    return precompiled.make_kernel(
        name="ppx_host_out_{}_{}_{}_{}_{}".format(*key),
        input_names=["ptr", "text", "codes", "user", "pcm", "heard", "eot"],
        output_names=["done"],
        source=_OUT_SOURCE,
        header=defines,
    )


def pinned_io(frame_size: int) -> PinnedIO | None:
    """A session's `PinnedIO` on CUDA (None elsewhere, when switched off, or when the driver
    will not page-lock memory: the step then reads and writes MLX's arrays as before)."""
    if not on_cuda() or not switched_on() or precompiled.stand_ins():
        return None
    try:
        return PinnedIO(frame_size)
    except (OSError, AttributeError):
        return None

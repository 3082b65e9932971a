"""The temporal kernel's codes as denormal floats (src/common.cuh, `ppx_word_dot<BITS, true>`), checked in
NumPy's IEEE float32: a code's bits alone are code * 2^-149, times x * 2^100 that is code * x *
2^-49 exactly, so a chunk's sum, scaled back by 2^49, is bit for bit the sum the kernel formed
before (each code made 2^23 + code by the exponent's bits, then 2^23 subtracted). A 4-bit code
masked where it lies in its word (`PPX_NIBBLE_AT`) is a denormal as well, code * 2^(at - 149),
and with x scaled by 2^(100 - at) (`ppx_xscale_at`) the products and sums are the same again."""

from __future__ import annotations

import numpy as np
import pytest

XSCALE = np.float32(2.0**100)
DOTSCALE = np.float32(2.0**49)


def byte_perm(x: np.ndarray, y: int, selector: int) -> np.ndarray:
    """CUDA's __byte_perm: byte n of the result is byte (selector's nibble n) of y:x."""
    pool = [(x >> np.uint32(8 * i)) & np.uint32(0xFF) for i in range(4)]
    pool += [np.full_like(x, (y >> (8 * i)) & 0xFF) for i in range(4)]
    out = np.zeros_like(x)
    for n in range(4):
        out |= pool[(selector >> (4 * n)) & 0x7] << np.uint32(8 * n)
    return out


def codes_of(word: np.ndarray, bits: int) -> list[np.ndarray]:
    """The words' codes in the kernel's order, each as a byte (the low halves of the bytes for
    nibbles 0, 2, 4, 6; the high halves for 1, 3, 5, 7)."""
    if bits == 8:
        return [word] * 4
    lo = word & np.uint32(0x0F0F0F0F)
    hi = (word >> np.uint32(4)) & np.uint32(0x0F0F0F0F)
    return [w for _ in range(4) for w in (lo, hi)]


def dot_before(word: np.ndarray, x: np.ndarray, bits: int) -> np.ndarray:
    dot = np.zeros(word.shape, np.float32)
    for j, w in enumerate(codes_of(word, bits)):
        i = j if bits == 8 else j // 2
        code = byte_perm(w, 0x4B000000, 0x7540 + i).view(np.float32) - np.float32(2**23)
        dot = (dot + code * x[:, j]).astype(np.float32)  # the product is exact: an FMA
    return dot


def dot_denormal(word: np.ndarray, x: np.ndarray, bits: int, base: int = 0x4440) -> np.ndarray:
    dot = np.zeros(word.shape, np.float32)
    scaled = (x * XSCALE).astype(np.float32)
    for j, w in enumerate(codes_of(word, bits)):
        i = j if bits == 8 else j // 2
        code = byte_perm(w, 0, base + i).view(np.float32)  # ppx_denormal
        dot = (dot + code * scaled[:, j]).astype(np.float32)
    return (dot * DOTSCALE).astype(np.float32)


def nibble_at(j: int) -> int:
    """PPX_NIBBLE_AT: the bit where ppx_word_dot<4, true> finds code j of a word."""
    return 4 * j if j < 5 else 4 * j - 12


def dot_masked(word: np.ndarray, x: np.ndarray, scale_at=nibble_at) -> np.ndarray:
    """ppx_word_dot<4, true>: each code masked in place (the top three after a shift by 12),
    times x scaled by 2^(100 - its bit), in the codes' order; scaled back by 2^49."""
    up = word >> np.uint32(12)
    dot = np.zeros(word.shape, np.float32)
    for j in range(8):
        src = word if j < 5 else up
        code = (src & np.uint32(0xF << nibble_at(j))).view(np.float32)
        scaled = (x[:, j] * np.float32(2.0 ** (100 - scale_at(j)))).astype(np.float32)
        dot = (dot + code * scaled).astype(np.float32)
    return (dot * DOTSCALE).astype(np.float32)


def bfloat16_values(n: int, width: int, seed: int) -> np.ndarray:
    """Values a bfloat16 activation can hold, from 1e-3 to 1e3 in size, some zero."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, width)) * 10.0 ** rng.uniform(-3, 3, (n, width))
    x[rng.random((n, width)) < 0.05] = 0.0
    bits = x.astype(np.float32).view(np.uint32) & np.uint32(0xFFFF0000)
    return bits.view(np.float32)


@pytest.mark.parametrize("bits", [4, 8])
def test_denormal_codes_give_the_sums_bit_for_bit(bits):
    rng = np.random.default_rng(bits)
    words = rng.integers(0, 2**32, 20000, dtype=np.uint64).astype(np.uint32)
    x = bfloat16_values(20000, 32 // bits, seed=bits)
    assert np.array_equal(dot_denormal(words, x, bits).view(np.uint32),
                          dot_before(words, x, bits).view(np.uint32))  # fmt: skip


def test_the_sums_are_the_codes_times_x():
    # And those sums are the dot products of the codes (in float64, to float32's precision):
    # the selectors pick the bytes the codes are in.
    words = np.array([0x76543210, 0xFEDCBA98], dtype=np.uint32)
    x = np.ones((2, 8), np.float32) * np.float32(0.5)
    assert dot_denormal(words, x, 4).tolist() == [0.5 * sum(range(8)), 0.5 * sum(range(8, 16))]
    assert dot_denormal(words, x[:, :4], 8).tolist() == [
        0.5 * (0x10 + 0x32 + 0x54 + 0x76),
        0.5 * (0x98 + 0xBA + 0xDC + 0xFE),
    ]


@pytest.mark.parametrize("base", [0x4441, 0x4404])
def test_a_wrong_selector_is_noticed(base):
    # Off by a byte, or the code put in byte 1: the sums differ from the kernel's before.
    rng = np.random.default_rng(0)
    words = rng.integers(0, 2**32, 1000, dtype=np.uint64).astype(np.uint32)
    x = bfloat16_values(1000, 4, seed=1)
    assert not np.array_equal(dot_denormal(words, x, 8, base), dot_before(words, x, 8))


def test_masked_nibbles_give_the_sums_bit_for_bit():
    rng = np.random.default_rng(11)
    words = rng.integers(0, 2**32, 20000, dtype=np.uint64).astype(np.uint32)
    x = bfloat16_values(20000, 8, seed=12)
    masked = dot_masked(words, x).view(np.uint32)
    assert np.array_equal(masked, dot_denormal(words, x, 4).view(np.uint32))
    assert np.array_equal(masked, dot_before(words, x, 4).view(np.uint32))
    # every masked code is a denormal (exponent bits zero), and the codes are the word's nibbles
    ones = np.array([0x76543210], dtype=np.uint32)
    assert dot_masked(ones, np.ones((1, 8), np.float32)).tolist() == [float(sum(range(8)))]
    # the chunk sums of x scaled per position and unscaled per position are the plain sums
    unscaled = [
        (x[:, j] * np.float32(2.0 ** (100 - nibble_at(j)))).astype(np.float32)
        * np.float32(2.0 ** (nibble_at(j) - 100))
        for j in range(8)
    ]
    assert np.array_equal(np.sum(np.stack(unscaled, 1), axis=1), np.sum(x, axis=1))


def test_a_wrong_position_scale_is_noticed():
    # x scaled by 2^100 everywhere (the byte permutes' scale) with the masked codes: wrong sums.
    rng = np.random.default_rng(13)
    words = rng.integers(0, 2**32, 1000, dtype=np.uint64).astype(np.uint32)
    x = bfloat16_values(1000, 8, seed=14)
    assert not np.array_equal(dot_masked(words, x, scale_at=lambda j: 0), dot_before(words, x, 4))

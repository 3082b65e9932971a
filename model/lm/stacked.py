"""Per-table and per-step weights stacked into one array, the originals becoming views of it.

A hot path then reads many small tables with one gather (the 17 input embeddings) or computes
many projections of the same input with one matmul (the depformer's `depformer_in`), and memory
stays the same: the modules keep their parameters (as row blocks of the stack), so loading,
saving and the checkpoint names are untouched.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from model import quantized
from model.derived import Derived, current, derive, stack_into
from model.lm.layers import matvec

_QUANTIZED_PARTS = ("weight", "scales", "biases")


def _parts(module: nn.Module) -> tuple[str, ...]:
    return _QUANTIZED_PARTS if isinstance(module, nn.QuantizedLinear) else ("weight",)


def stacked_sources(modules: list[nn.Module]) -> tuple[mx.array, ...]:
    """The arrays a stack of `modules` is built from (to tell when it is stale)."""
    return tuple(module[part] for module in modules for part in _parts(module))


def stack_tables(tables: list[nn.Embedding], zero_row: bool = True) -> Derived:
    """One table for `tables` (plus a zero row): value = (table, row offset of each, zero row).

    `table[where(ids >= 0, ids + offsets, zero)]` then looks up one id per table at once, the
    id -1 giving zeros.
    """
    weight = tables[0].weight
    extra = [mx.zeros((1, weight.shape[1]), dtype=weight.dtype)] if zero_row else []
    sizes = [t.weight.shape[0] for t in tables]
    stacked = stack_into(tables, "weight", extra)
    offsets = mx.array([sum(sizes[:i]) for i in range(len(sizes))], dtype=mx.int32)
    zero = mx.array(sum(sizes), dtype=mx.int32)
    return derive(stacked_sources(tables), lambda: (stacked, offsets, zero))


def embed_stacked(
    stack: Derived | None, tables: list[nn.Embedding], tokens: mx.array
) -> mx.array | None:
    """The sum over `tables` of each column's embeddings, [T, n] ids -> [1, T, D], by one gather
    from `stack_tables(tables)` (None: no stack, or a stale one: look the tables up one by one)."""
    stacked = current(stack, stacked_sources(tables))
    if stacked is None:
        return None
    table, offsets, zero = stacked
    ids = mx.where(tokens >= 0, tokens + offsets, zero)
    return mx.expand_dims(table[ids].sum(axis=1), 0)


def stack_linears(linears: list[nn.Module]) -> Derived:
    """One projection for `linears` (same input): value[n] = the stacked arrays of the first n.

    Each `value[n]` is a prefix of the stack (a view), so any number of leading steps costs one
    matmul over exactly their rows.
    """
    parts = _parts(linears[0])
    stacked = [stack_into(linears, part, []) for part in parts]
    rows = linears[0].weight.shape[0]

    def prefixes() -> dict[int, tuple[mx.array, ...]]:
        return {n: tuple(a[: n * rows] for a in stacked) for n in range(1, len(linears) + 1)}

    return derive(stacked_sources(linears), prefixes)


def linear_rows(
    value: dict[int, tuple[mx.array, ...]], like: nn.Module, x: mx.array, n: int
) -> mx.array:
    """x times the first `n` stacked linears of `stack_linears` (`like`: one of them) -> [..., n*out]."""
    arrays = value[n]
    if isinstance(like, nn.QuantizedLinear):
        return matvec(x, quantized.of_linear(like, arrays))
    (w,) = arrays
    return x @ w.T

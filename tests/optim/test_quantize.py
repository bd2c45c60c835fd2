"""The block-wise quantiser: error bound, exact zero, agreement with the NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from steplab.optim import reference_lean
from steplab.optim.lean_buffers import qmap_for
from steplab.optim.quantize import (
    BLOCK_SIZES,
    QuantMap,
    dequantize_blockwise,
    quantize_blockwise,
)

BUFFERS = [("exp_avg", 8), ("exp_avg_sq", 8), ("exp_avg", 4), ("exp_avg_sq", 4)]


def _unpack(codes: torch.Tensor, bits: int, numel: int) -> np.ndarray:
    raw = codes.numpy()
    if bits == 8:
        return raw
    return np.stack([raw >> 4, raw & 15], axis=1).ravel()[:numel]


def _values(draw: st.DrawFn, signed: bool) -> np.ndarray:
    shape = draw(st.lists(st.integers(1, 70), min_size=1, max_size=3))
    size = int(np.prod(shape))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    scale = 10.0 ** rng.uniform(-8, 3, size=size)  # moments span many decades
    x = rng.normal(size=size) * scale
    x[rng.random(size) < 0.1] = 0.0
    if draw(st.booleans()):
        x[: min(size, draw(st.integers(0, 300)))] = 0.0  # whole zero blocks
    x = x if signed else np.abs(x)
    return x.astype(np.float32).reshape(shape)


@st.composite
def _case(draw: st.DrawFn) -> tuple[str, int, np.ndarray]:
    name, bits = draw(st.sampled_from(BUFFERS))
    return name, bits, _values(draw, name == "exp_avg")


def test_maps_have_the_documented_sizes_and_errors() -> None:
    signed8, unsigned8 = QuantMap.dynamic(True, 8), QuantMap.dynamic(False, 8)
    assert (len(signed8.magnitudes), len(unsigned8.magnitudes)) == (128, 256)
    assert signed8.max_error <= 0.01 and unsigned8.max_error <= 0.01
    assert abs(signed8.max_error - 0.45 / 64) < 1e-12
    assert float(signed8.table[0]) == 0.0 and float(signed8.table[127]) == 1.0
    assert float(signed8.table[255]) == -1.0
    assert QuantMap.linear_positive(4).max_error == 0.0625
    assert BLOCK_SIZES == {8: 256, 4: 128}


@pytest.mark.parametrize(("name", "bits"), BUFFERS)
def test_map_matches_reference_magnitudes(name: str, bits: int) -> None:
    mags, signed = reference_lean.magnitudes(name, bits)
    qmap = qmap_for(name, bits)
    assert qmap.signed == signed
    np.testing.assert_array_equal(qmap.magnitudes.numpy(), mags)


@settings(max_examples=60, deadline=None)
@given(case=_case())
def test_quantiser_error_and_zero_and_reference(case: tuple[str, int, np.ndarray]) -> None:
    name, bits, x = case
    qmap = qmap_for(name, bits)
    tensor = torch.from_numpy(x)
    codes, absmax = quantize_blockwise(tensor, qmap)
    assert codes.dtype == torch.uint8 and absmax.dtype == torch.float32
    assert codes.numel() == (x.size if bits == 8 else (x.size + 1) // 2)
    assert absmax.numel() == -(-x.size // qmap.block)
    back = dequantize_blockwise(codes, absmax, qmap, x.size).numpy()
    flat = x.ravel()
    block_absmax = np.repeat(absmax.numpy(), qmap.block)[: x.size].astype(np.float64)
    error = np.abs(back.astype(np.float64) - flat)
    assert np.all(error <= qmap.max_error * block_absmax * (1 + 1e-6) + 1e-45)
    if bits == 8:
        assert np.all(error <= 0.01 * block_absmax + 1e-45)
    zero_ok = flat == 0 if qmap.magnitudes[0] == 0 else block_absmax == 0
    assert np.all(back[zero_ok] == 0.0)
    ref_codes, ref_absmax = reference_lean.quantize(x, name, bits)
    np.testing.assert_array_equal(absmax.numpy(), ref_absmax)
    got = _unpack(codes, bits, x.size)
    differ = got != ref_codes
    if differ.any():  # only where |x|/absmax sits within float rounding of a midpoint
        y = np.abs(flat[differ] / block_absmax[differ])
        mags = qmap.magnitudes.numpy().astype(np.float64)
        mids = (mags[1:] + mags[:-1]) / 2
        assert np.min(np.abs(y[:, None] - mids), axis=1).max() < 1e-6
    same = ~differ
    ref_back = reference_lean.dequantize(ref_codes, ref_absmax, name, bits)
    np.testing.assert_array_equal(back[same], ref_back[same])


def test_zero_quantises_to_exactly_zero_in_every_form() -> None:
    x = torch.zeros(1000)
    x[::7] = torch.linspace(-3, 3, len(range(0, 1000, 7)))
    x[500] = 0.0
    for name, bits in BUFFERS:
        qmap = qmap_for(name, bits)
        values = x if qmap.signed else x.abs()
        back = dequantize_blockwise(*quantize_blockwise(values, qmap), qmap, 1000)
        if qmap.magnitudes[0] == 0:
            assert torch.equal(back[values == 0], torch.zeros(int((values == 0).sum())))
        all_zero = dequantize_blockwise(*quantize_blockwise(torch.zeros(300), qmap), qmap, 300)
        assert torch.equal(all_zero, torch.zeros(300))


def test_block_absmax_is_kept_exactly() -> None:
    x = torch.randn(4096) * 5
    for bits in (8, 4):
        qmap = qmap_for("exp_avg", bits)
        codes, absmax = quantize_blockwise(x, qmap)
        back = dequantize_blockwise(codes, absmax, qmap, x.numel())
        starts = torch.arange(absmax.numel()) * qmap.block
        peaks = x.view(-1, qmap.block).abs().argmax(dim=1) + starts
        assert torch.equal(back[peaks], x[peaks])

"""The block-wise quantiser: error bounds, exact zero, bit-exact agreement with NumPy."""

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
    BlockCodec,
    QuantMap,
    Scratch,
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
    # the bound: every 8-bit error within 1% of the block absmax
    assert signed8.max_error <= 0.01 and unsigned8.max_error <= 0.01
    assert 0.45 / 64 <= signed8.max_error <= 0.45 / 64 + 2**-12 + 1e-6
    assert float(signed8.table[0]) == 0.0 and float(signed8.table[127]) == 1.0
    assert float(signed8.table[255]) == -1.0
    v4 = QuantMap.zero_and_linear(4)
    assert float(v4.table[0]) == 0.0 and float(v4.table[15]) == 1.0
    assert 1 / 29 <= v4.max_error <= 1 / 29 + 2**-12 + 1e-6
    assert 0.1125 <= qmap_for("exp_avg", 4).max_error <= 0.1125 + 2**-12 + 1e-6
    assert BLOCK_SIZES == {8: 256, 4: 128}


@pytest.mark.parametrize(("name", "bits"), BUFFERS)
def test_every_map_has_zero_and_no_4_bit_map_can_meet_one_percent(name: str, bits: int) -> None:
    """Zero is a level of every map; n levels leave some point of [0, 1] (of [-1, 1]
    for signed maps) at least 1/(2n) (1/n) from all of them, so 4 bits cannot keep
    every error within 1% of the absmax, and the maps' worst errors respect that."""
    qmap = qmap_for(name, bits)
    assert float(qmap.magnitudes[0]) == 0.0 and float(qmap.table[0]) == 0.0
    levels = torch.unique(qmap.table).numel()
    span = 2.0 if qmap.signed else 1.0
    assert qmap.max_error >= span / (2 * levels)
    if bits == 4:
        assert span / (2 * 16) > 0.01  # the pigeonhole bound for any 16-code map


@pytest.mark.parametrize(("name", "bits"), BUFFERS)
def test_map_matches_reference_magnitudes(name: str, bits: int) -> None:
    mags, signed = reference_lean.magnitudes(name, bits)
    qmap = qmap_for(name, bits)
    assert qmap.signed == signed
    np.testing.assert_array_equal(qmap.magnitudes.numpy(), mags)


@settings(max_examples=60, deadline=None)
@given(case=_case())
def test_quantiser_equals_reference_and_meets_its_error_bound(
        case: tuple[str, int, np.ndarray]) -> None:
    name, bits, x = case
    qmap = qmap_for(name, bits)
    codes, absmax = quantize_blockwise(torch.from_numpy(x), qmap)
    assert codes.dtype == torch.uint8 and absmax.dtype == torch.float32
    assert codes.numel() == (x.size if bits == 8 else (x.size + 1) // 2)
    assert absmax.numel() == -(-x.size // qmap.block)
    ref_codes, ref_absmax = reference_lean.quantize(x, name, bits)
    np.testing.assert_array_equal(absmax.numpy(), ref_absmax)
    np.testing.assert_array_equal(_unpack(codes, bits, x.size), ref_codes)
    back = dequantize_blockwise(codes, absmax, qmap, x.size).numpy()
    np.testing.assert_array_equal(back, reference_lean.dequantize(ref_codes, ref_absmax, name,
                                                                  bits))
    flat = x.ravel().astype(np.float64)
    block_absmax = np.repeat(absmax.numpy(), qmap.block)[: x.size].astype(np.float64)
    error = np.abs(back.astype(np.float64) - flat)
    assert np.all(error <= qmap.max_error * block_absmax * (1 + 1e-6) + 1e-45)
    bound = {8: 0.01, 4: 0.1127 if qmap.signed else 0.0348}[bits]  # 1% for 8-bit, the issue's
    assert np.all(error <= bound * block_absmax + 1e-45)


@st.composite
def _with_zeros(draw: st.DrawFn) -> tuple[str, int, np.ndarray]:
    name, bits = draw(st.sampled_from(BUFFERS))
    size = draw(st.integers(1, 700))
    values = draw(st.lists(st.sampled_from([0.0, -0.0, 1.0, -3.5, 1e-30, 2e-12, 7e3, 1e-7]),
                           min_size=size, max_size=size))
    x = np.array(values, dtype=np.float32)
    return name, bits, x if name == "exp_avg" else np.abs(x)


@settings(max_examples=80, deadline=None)
@given(case=_with_zeros())
def test_zero_quantises_to_exactly_zero(case: tuple[str, int, np.ndarray]) -> None:
    """In every map: zeros (and -0.0) decode to exactly 0 whatever else is in their block,
    all-zero blocks too; a positive second moment in 4 bits never decodes to 0."""
    name, bits, x = case
    qmap = qmap_for(name, bits)
    back = dequantize_blockwise(*quantize_blockwise(torch.from_numpy(x), qmap), qmap, x.size)
    assert torch.all(back[torch.from_numpy(x == 0)] == 0)
    if qmap.zero_exact:
        assert torch.all(back[torch.from_numpy(x > 0)] > 0)


def test_block_absmax_is_kept_exactly() -> None:
    x = torch.randn(4096) * 5
    for bits in (8, 4):
        qmap = qmap_for("exp_avg", bits)
        codes, absmax = quantize_blockwise(x, qmap)
        back = dequantize_blockwise(codes, absmax, qmap, x.numel())
        starts = torch.arange(absmax.numel()) * qmap.block
        peaks = x.view(-1, qmap.block).abs().argmax(dim=1) + starts
        assert torch.equal(back[peaks], x[peaks])


@pytest.mark.parametrize(("name", "bits"), BUFFERS)
@pytest.mark.parametrize("numel", [5000, 5001])
def test_codec_chunks_equal_the_whole_tensor(name: str, bits: int, numel: int) -> None:
    """Encoding chunk by chunk through one reused BlockCodec gives the whole tensor's codes
    (an odd last chunk included)."""
    qmap = qmap_for(name, bits)
    x = torch.randn(numel) * torch.logspace(-6, 2, numel)
    x = x if qmap.signed else x.abs()
    codes, absmax = quantize_blockwise(x, qmap)
    chunk, scratch = 1024, Scratch.allocate(1024)
    buffer = torch.empty(1024)
    got, scales = [], []
    for piece in x.split(chunk):
        n = piece.numel()
        codec = BlockCodec([qmap], buffer, n, scratch)
        codec.values[0].copy_(piece)
        out = torch.empty(qmap.packed_numel(n), dtype=torch.uint8)
        scale = torch.empty(qmap.blocks(n), 1)
        codec.encode([(out, scale)])
        got.append(out)
        scales.append(scale.view(-1))
        decoded = codec.decode([(out, scale)])[0]
        assert torch.equal(decoded, dequantize_blockwise(out, scale, qmap, n))
    assert torch.equal(torch.cat(got), codes) and torch.equal(torch.cat(scales), absmax)


@settings(max_examples=40, deadline=None)
@given(numel=st.integers(1, 1500), bits=st.sampled_from([8, 4]), amsgrad=st.booleans(),
       seed=st.integers(0, 2**16))
def test_one_codec_for_several_buffers_equals_each_buffer_alone(numel: int, bits: int,
                                                                amsgrad: bool, seed: int) -> None:
    """A parameter's moments coded in one work area (one torch call per pass for all of
    them) give each buffer's own codes and values, whatever the chunk's length."""
    names = ["exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if amsgrad else [])
    qmaps = [qmap_for(name, bits) for name in names]
    gen = torch.Generator().manual_seed(seed)
    xs = [torch.randn(numel, generator=gen) * 10.0 ** torch.empty(numel).uniform_(-9, 2,
                                                                               generator=gen)
          for _ in names]
    xs = [x if q.signed else x.abs() for x, q in zip(xs, qmaps, strict=True)]
    xs[0][: numel // 3] = 0.0
    total = qmaps[0].blocks(numel) * qmaps[0].block
    codec = BlockCodec(qmaps, torch.full((len(names) * total + 7,), float("nan")), numel,
                       Scratch.allocate(total, buffers=len(names)))
    pieces = [(torch.empty(q.packed_numel(numel), dtype=torch.uint8),
               torch.empty(q.blocks(numel), 1)) for q in qmaps]
    for row, x in zip(codec.values, xs, strict=True):
        row.copy_(x)
    codec.encode(pieces)
    decoded = [v.clone() for v in codec.decode(pieces)]
    for x, q, (codes, absmax), back in zip(xs, qmaps, pieces, decoded, strict=True):
        want_codes, want_absmax = quantize_blockwise(x, q)
        assert torch.equal(codes, want_codes) and torch.equal(absmax.view(-1), want_absmax)
        assert torch.equal(back, dequantize_blockwise(want_codes, want_absmax, q, numel))


def test_codec_rejects_mixed_widths_unsigned_before_signed_and_four_buffers() -> None:
    scratch = Scratch.allocate(256, buffers=2)
    with pytest.raises(ValueError, match="one code width, signed maps first, at most 3"):
        BlockCodec([qmap_for("exp_avg", 8), qmap_for("exp_avg_sq", 4)], torch.empty(512), 256,
                   scratch)
    with pytest.raises(ValueError, match="one code width, signed maps first, at most 3"):
        BlockCodec([qmap_for("exp_avg_sq", 8), qmap_for("exp_avg", 8)], torch.empty(512), 256,
                   scratch)
    with pytest.raises(ValueError, match="one code width, signed maps first, at most 3"):
        BlockCodec([qmap_for("exp_avg_sq", 8)] * 4, torch.empty(1024), 256, scratch)


def test_second_moments_keep_a_nonzero_code_down_to_the_first_bucket() -> None:
    """Second moments get code 0 only in the first bucket (|y| < 2^-136, with 0 itself);
    the smallest float32 ratios above it still decode to a positive value, and NaN
    (0/0 of an all-zero block) to 0."""
    for bits in (8, 4):
        qmap = qmap_for("exp_avg_sq", bits)
        x = torch.zeros(qmap.block)
        x[0] = 1.0
        x[1], x[2], x[3] = 2.0**-135, 2.0**-137, 1e-30
        back = dequantize_blockwise(*quantize_blockwise(x, qmap), qmap, x.numel())
        assert back[1] > 0 and back[2] == 0 and back[3] > 0 and back[4] == 0
        assert torch.equal(dequantize_blockwise(*quantize_blockwise(torch.zeros(5), qmap), qmap,
                                                5), torch.zeros(5))

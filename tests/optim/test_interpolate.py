"""The blocked foreach sync equals the plain formula bit for bit, whatever the tensor layout."""

from __future__ import annotations

import torch

from steplab.optim.interpolate import lerp_and_copy_


def test_blocked_sync_is_bit_identical_to_whole_tensor_lerp() -> None:
    gen = torch.Generator().manual_seed(0)
    shapes = [(700, 300), (5,), (), (64 * 1024 + 3,), (3, 4)]
    fast = [torch.randn(s, generator=gen) for s in shapes]
    fast.append(torch.randn(40, 30, generator=gen).t())  # non-contiguous
    fast.append(torch.randn(1000, generator=gen, dtype=torch.float64))  # another dtype
    slow = [torch.randn(f.shape, generator=gen, dtype=f.dtype) for f in fast]
    expected = [torch.lerp(s, f, 0.3) for f, s in zip(fast, slow, strict=True)]
    lerp_and_copy_(fast, slow, 0.3)
    for f, s, e in zip(fast, slow, expected, strict=True):
        assert torch.equal(s, e) and torch.equal(f, e)


def test_empty_lists_are_a_no_op() -> None:
    lerp_and_copy_([], [], 0.5)


def test_cached_block_views_are_rebuilt_when_a_storage_changes() -> None:
    cache: dict[str, object] = {}
    fast = [torch.ones(100_000), torch.ones(3)]
    slow = [torch.zeros(100_000), torch.zeros(3)]
    lerp_and_copy_(fast, slow, 0.5, cache)
    first_blocks = cache["blocks"]
    lerp_and_copy_(fast, slow, 0.5, cache)  # same tensors: the views are reused
    assert cache["blocks"] is first_blocks
    fast[0] = torch.full((100_000,), 2.0)  # a new storage, as after param.data = ...
    slow[0] = torch.zeros(100_000)
    lerp_and_copy_(fast, slow, 0.5, cache)
    assert cache["blocks"] is not first_blocks
    assert torch.equal(fast[0], torch.ones(100_000)) and torch.equal(slow[0], fast[0])
    assert torch.equal(fast[1], torch.full((3,), 0.5))  # synced three times, already equal

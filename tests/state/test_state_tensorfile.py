"""The streaming safetensors writer and reader."""

from __future__ import annotations

import random
import zlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from steplab.errors import CheckpointError
from steplab.state.hashing import (
    CHUNK_BYTES,
    crc32_combine,
    digest_bytes,
    tensor_bytes,
    tensor_sha256,
)
from steplab.state.tensorfile import (
    DTYPE_NAMES,
    read_header,
    read_tensors,
    verify_tensors,
    write_tensors,
)


def _all_dtypes() -> list[tuple[str, torch.Tensor]]:
    base = torch.arange(6, dtype=torch.float32).reshape(2, 3) - 2
    out = [(f"t/{dtype}", base.to(dtype)) for dtype in DTYPE_NAMES]
    return [*out, ("scalar", torch.tensor(3.5)), ("empty", torch.zeros(0, 4)),
            ("strided", torch.arange(12.0).reshape(3, 4).t())]


@pytest.mark.parametrize("algorithm", ["crc32", "sha256"])
def test_every_dtype_round_trips_bit_exactly_with_hashes(tmp_path: Path, algorithm: str) -> None:
    items = _all_dtypes()
    hashes = write_tensors(tmp_path / "t.safetensors", items, algorithm=algorithm)
    assert hashes.algorithm == algorithm
    loaded = read_tensors(tmp_path / "t.safetensors", read_header(tmp_path / "t.safetensors"),
                          expected_digests=hashes)
    for key, tensor in items:
        assert loaded[key].dtype == tensor.dtype and loaded[key].shape == tensor.shape
        assert tensor_sha256(loaded[key]) == tensor_sha256(tensor)
        assert hashes[key] == digest_bytes(tensor_bytes(tensor), algorithm)


def test_chunked_checksums_equal_whole_tensor_ones_and_catch_a_flip_in_any_chunk(
        tmp_path: Path) -> None:
    path = tmp_path / "big.safetensors"
    big = torch.arange(CHUNK_BYTES // 2 + 7, dtype=torch.float64)  # 4+ chunks, last one short
    items = [("small", torch.ones(3)), ("big", big), ("empty", torch.zeros(0))]
    hashes = write_tensors(path, items)
    assert hashes["big"] == format(zlib.crc32(tensor_bytes(big)), "08x")
    assert hashes["empty"] == format(zlib.crc32(b""), "08x")
    header = read_header(path)
    verify_tensors(path, header, hashes)
    clean = path.read_bytes()
    begin = header.data_start + header.entry("big").begin
    for offset in (0, CHUNK_BYTES - 1, 2 * CHUNK_BYTES + 5, big.numel() * 8 - 1):
        data = bytearray(clean)
        data[begin + offset] ^= 0x80
        path.write_bytes(bytes(data))
        into = {"small": torch.zeros(3)}
        with pytest.raises(CheckpointError, match="big: content hash mismatch"):
            read_tensors(path, header, hashes, into)
        assert torch.equal(into["small"], torch.zeros(3))  # nothing written before the check
        with pytest.raises(CheckpointError, match="big: content hash mismatch"):
            verify_tensors(path, header, hashes)


def test_crc32_combine_matches_zlib_on_random_splits() -> None:
    rng = random.Random(0)
    for _ in range(50):
        data = rng.randbytes(rng.randrange(0, 300))
        cut = rng.randrange(0, len(data) + 1)
        head, tail = data[:cut], data[cut:]
        assert crc32_combine(zlib.crc32(head), zlib.crc32(tail), len(tail)) == zlib.crc32(data)


def test_files_are_interchangeable_with_the_safetensors_library(tmp_path: Path) -> None:
    items = dict(_all_dtypes()[:-1])
    write_tensors(tmp_path / "ours.safetensors", list(items.items()), {"format": "x"})
    theirs = load_file(tmp_path / "ours.safetensors")
    assert all(tensor_sha256(theirs[k]) == tensor_sha256(v) for k, v in items.items())
    save_file({k: v for k, v in items.items() if v.numel()}, tmp_path / "theirs.safetensors")
    path = tmp_path / "theirs.safetensors"
    ours = read_tensors(path, read_header(path))
    assert torch.equal(ours["t/torch.float32"], items["t/torch.float32"])


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda raw: raw[:5], "shorter than the 8-byte header length"),
    (lambda raw: (10**9).to_bytes(8, "little") + raw[8:], "exceeds the file"),
    (lambda raw: raw[:8] + b"[" + raw[9:], "not valid JSON"),
    (lambda raw: raw + b"\x00", "header describes"),
    (lambda raw: raw.replace(b'"F32"', b'"F99"', 1), "dtype: got 'F99'"),
    (lambda raw: raw.replace(b'"shape":[2,3]', b'"shape":[3,3]', 1), "shape needs"),
])
def test_malformed_files_raise_a_checkpoint_error(tmp_path: Path, mutate: object,
                                                  message: str) -> None:
    path = tmp_path / "t.safetensors"
    write_tensors(path, [("a", torch.ones(2, 3)), ("b", torch.ones(2))])
    path.write_bytes(mutate(path.read_bytes()))  # type: ignore[operator]
    with pytest.raises(CheckpointError, match=message):
        read_tensors(path, read_header(path))

"""MNIST (IDX) and CIFAR-10 (python and binary batches) read from tiny local files."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from steplab.errors import SpecError
from steplab.tasks import get_task
from steplab.tasks.files import CIFAR_PY_FILES, SafeBatchUnpickler, read_cifar10, read_idx

RNG = np.random.default_rng(0)


def write_idx(path: Path, array: np.ndarray, *, gz: bool = False) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    if gz:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)


def write_mnist(root: Path, n_train: int = 20, n_test: int = 5, gz: bool = False) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(root / f"{prefix}-images-idx3-ubyte", RNG.integers(0, 256, (n, 28, 28)), gz=gz)
        write_idx(root / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10, gz=gz)


def cifar_batch(n: int) -> dict[bytes, object]:
    # the official batches: a dict with uint8 data [N, 3072] and a list of int labels
    return {
        b"batch_label": b"training batch",
        b"labels": [int(v) for v in np.arange(n) % 10],
        b"data": RNG.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }


def write_cifar_py(root: Path, n: int = 4, protocol: int = 2) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in CIFAR_PY_FILES:
        (folder / name).write_bytes(pickle.dumps(cifar_batch(n), protocol=protocol))
    return folder


def write_cifar_bin(root: Path, n: int = 4) -> Path:
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    for name in CIFAR_PY_FILES:
        records = np.zeros((n, 3073), dtype=np.uint8)
        records[:, 0] = np.arange(n) % 10
        records[:, 1:] = RNG.integers(0, 256, (n, 3072))
        (folder / f"{name}.bin").write_bytes(records.tobytes())
    return folder


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_reads_idx_files_plain_and_gzipped(tmp_path: Path, gz: bool) -> None:
    write_mnist(tmp_path, gz=gz)
    data = get_task("mnist", data_dir=str(tmp_path)).load_data()
    assert data.sizes() == {"train": 18, "val": 2, "test": 5}
    assert data.x_train.shape[1:] == (1, 28, 28) and data.x_train.dtype == torch.float32
    assert data.y_test.tolist() == [0, 1, 2, 3, 4]
    model = get_task("mnist").build_model(torch.Generator().manual_seed(0))
    assert model(data.x_test).shape == (5, 10)


def test_mnist_pixels_are_standardised_with_the_usual_constants(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    raw = read_idx(tmp_path / "t10k-images-idx3-ubyte")
    data = get_task("mnist").load_data(str(tmp_path))
    expected = (torch.tensor(raw, dtype=torch.float32) / 255 - 0.1307) / 0.3081
    torch.testing.assert_close(data.x_test[:, 0], expected)


def test_mnist_finds_the_torchvision_layout(tmp_path: Path) -> None:
    write_mnist(tmp_path / "MNIST" / "raw", gz=True)
    assert get_task("mnist").load_data(str(tmp_path)).sizes()["test"] == 5


def test_mnist_missing_files_are_named(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(SpecError, match="missing MNIST files t10k-labels-idx1-ubyte;") as err:
        get_task("mnist").load_data(str(tmp_path))
    assert "train-images-idx3-ubyte" in str(err.value)  # the layout is spelled out


def test_mnist_without_data_dir_says_what_to_pass() -> None:
    with pytest.raises(SpecError, match="data_dir: got None"):
        get_task("mnist").load_data()


def test_mnist_data_dir_that_is_not_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="not a directory"):
        get_task("mnist").load_data(str(tmp_path / "nope"))


def test_idx_with_a_bad_header_or_size_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "x-idx1-ubyte"
    bad.write_bytes(b"\x00\x00\x0d\x01\x00\x00\x00\x01abcd")  # 0x0d = float, not ubyte
    with pytest.raises(SpecError, match="expected an IDX file of unsigned bytes"):
        read_idx(bad)
    bad.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 5, 1, 2]))  # says 5 labels, holds 2
    with pytest.raises(SpecError, match="got 10 bytes, expected 13"):
        read_idx(bad)
    gz = tmp_path / "y-idx1-ubyte.gz"
    gz.write_bytes(b"not gzip at all")
    with pytest.raises(SpecError, match="not valid gzip"):
        read_idx(gz)


@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL, 5])
def test_cifar10_reads_python_batches_without_trusting_pickle(
    tmp_path: Path, protocol: int
) -> None:
    write_cifar_py(tmp_path, n=4, protocol=protocol)
    data = get_task("cifar10", data_dir=str(tmp_path)).load_data()
    assert data.sizes() == {"train": 18, "val": 2, "test": 4}
    assert data.x_train.shape[1:] == (3, 32, 32) and data.y_train.dtype == torch.int64
    model = get_task("cifar10").build_model(torch.Generator().manual_seed(0))
    assert model(data.x_test).shape == (4, 10)


def test_cifar10_python_and_binary_versions_give_the_same_arrays(tmp_path: Path) -> None:
    folder = write_cifar_py(tmp_path / "a")
    (tmp_path / "b").mkdir()
    for name in CIFAR_PY_FILES:  # write the very same images in the binary layout
        with (folder / name).open("rb") as f:
            batch = SafeBatchUnpickler(f).load()
        labels = np.asarray(batch[b"labels"], dtype=np.uint8)[:, None]
        out = tmp_path / "b" / "cifar-10-batches-bin"
        out.mkdir(exist_ok=True)
        (out / f"{name}.bin").write_bytes(np.hstack([labels, batch[b"data"]]).tobytes())
    a, b = read_cifar10(str(tmp_path / "a")), read_cifar10(str(tmp_path / "b"))
    for key in ("x", "y", "x_test", "y_test"):
        np.testing.assert_array_equal(a[key], b[key])
    assert a["x"].shape == (20, 3, 32, 32)


def test_cifar10_binary_only_layout_loads(tmp_path: Path) -> None:
    write_cifar_bin(tmp_path, n=3)
    assert get_task("cifar10").load_data(str(tmp_path)).sizes()["test"] == 3


def test_cifar10_pickle_with_a_code_global_is_refused_and_not_run(tmp_path: Path) -> None:
    folder = write_cifar_py(tmp_path)
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (Path.touch, (str(marker),))  # would create a file if unpickled

    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": Exploit(), b"labels": []}))
    with pytest.raises(SpecError, match=r"data_batch_3.*is not allowed"):
        get_task("cifar10").load_data(str(tmp_path))
    assert not marker.exists()


def test_cifar10_batch_with_wrong_contents_is_refused(tmp_path: Path) -> None:
    folder = write_cifar_py(tmp_path)
    bad = {b"data": np.zeros((2, 10), dtype=np.uint8), b"labels": [0, 1]}
    (folder / "test_batch").write_bytes(pickle.dumps(bad))
    with pytest.raises(SpecError, match=r"expected uint8 \[N, 3072\]"):
        read_cifar10(str(tmp_path))
    (folder / "test_batch").write_bytes(pickle.dumps({b"labels": [0]}))
    with pytest.raises(SpecError, match="not a CIFAR-10 python batch"):
        read_cifar10(str(tmp_path))


def test_cifar10_missing_files_name_both_layouts(tmp_path: Path) -> None:
    folder = write_cifar_py(tmp_path)
    (folder / "data_batch_5").unlink()
    with pytest.raises(SpecError) as err:
        get_task("cifar10").load_data(str(tmp_path))
    message = str(err.value)
    assert "cifar-10-batches-py/{data_batch_5}" in message
    assert "cifar-10-batches-bin/{data_batch_1.bin," in message
    assert "\n" not in message


def test_cifar10_binary_file_of_the_wrong_length_is_refused(tmp_path: Path) -> None:
    folder = write_cifar_bin(tmp_path)
    (folder / "test_batch.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(SpecError, match="expected a multiple of 3073"):
        read_cifar10(str(tmp_path))

"""Readers for MNIST and CIFAR-10 in their standard on-disk formats.

- MNIST: IDX files (LeCun et al.), ``train-images-idx3-ubyte``,
  ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
  ``t10k-labels-idx1-ubyte``, each optionally gzipped (``.gz``).
- CIFAR-10, python version: ``cifar-10-batches-py/data_batch_1..5`` and
  ``test_batch``. These are pickles. steplab never unpickles arbitrary files,
  so they are read with :class:`SafeBatchUnpickler`, whose ``find_class``
  allows only the globals NumPy needs to rebuild an array
  (``numpy.core.multiarray._reconstruct`` / ``numpy._core.multiarray._reconstruct``,
  ``numpy.ndarray``, ``numpy.dtype`` and ``numpy._core.numeric._frombuffer``
  / ``numpy.core.numeric._frombuffer``, and ``_codecs.encode``, which
  Python 3 uses for bytes in protocol-2 pickles) and refuses every other
  global, so a crafted file cannot run code. Arrays of ``object`` dtype are
  refused as well.
- CIFAR-10, binary version: ``cifar-10-batches-bin/data_batch_1..5.bin`` and
  ``test_batch.bin`` (records of 1 label byte + 3072 pixel bytes); no pickle.

Bad or missing files raise :class:`~steplab.errors.SpecError` naming the
files and the expected layout.

References:
    LeCun, Cortes & Burges, "The MNIST database" (IDX format);
    Krizhevsky, "Learning Multiple Layers of Features from Tiny Images" (2009),
    and the CIFAR-10 page (cs.toronto.edu/~kriz/cifar.html) for both layouts.
"""

from __future__ import annotations

import gzip
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from steplab.errors import SpecError

__all__ = [
    "CIFAR_BIN_FILES",
    "CIFAR_PY_FILES",
    "MNIST_FILES",
    "SafeBatchUnpickler",
    "find_mnist",
    "read_cifar10",
    "read_idx",
]

MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
CIFAR_PY_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")
CIFAR_BIN_FILES = tuple(f"{name}.bin" for name in CIFAR_PY_FILES)

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    # Python 3 writes bytes in protocol-2 pickles as _codecs.encode(str, "latin1"):
    # a pure data conversion that runs no user code
    ("_codecs", "encode"),
}


def _need_dir(data_dir: str | None, task: str, layout: str) -> Path:
    if data_dir is None:
        raise SpecError(
            f"data_dir: got None; task {task!r} reads local files (pass --data-dir DIR); "
            f"expected {layout}"
        )
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise SpecError(f"data_dir: got {data_dir!r}, which is not a directory; expected {layout}")
    return path


# ---------------------------------------------------------------- MNIST (IDX)

_MNIST_LAYOUT = "DIR or DIR/MNIST/raw holding " + ", ".join(MNIST_FILES) + " (each may end .gz)"


def find_mnist(data_dir: str | None) -> dict[str, Path]:
    """Locate the four MNIST IDX files under ``data_dir`` (or ``data_dir/MNIST/raw``).

    Returns:
        file stem -> path (the plain file if present, else the ``.gz``).

    Raises:
        SpecError: no directory, or files missing (all of them are named).
    """
    root = _need_dir(data_dir, "mnist", _MNIST_LAYOUT)
    best: dict[str, Path] = {}
    best_missing: list[str] = list(MNIST_FILES)
    for folder in (root, root / "MNIST" / "raw"):
        found: dict[str, Path] = {}
        for stem in MNIST_FILES:
            for candidate in (folder / stem, folder / f"{stem}.gz"):
                if candidate.is_file():
                    found[stem] = candidate
                    break
        missing = [s for s in MNIST_FILES if s not in found]
        if not missing:
            return found
        if len(missing) < len(best_missing):
            best, best_missing = found, missing
    where = best[next(iter(best))].parent if best else root
    raise SpecError(
        f"data_dir {str(where)!r}: missing MNIST files {', '.join(best_missing)}; "
        f"expected {_MNIST_LAYOUT}"
    )


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file of unsigned bytes (optionally gzipped) into a uint8 array.

    The header is two zero bytes, a type byte (``0x08`` = ubyte), a dimension
    count, then one big-endian uint32 per dimension.

    Raises:
        SpecError: a bad magic number, type, or a size that disagrees with the header.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "labels-idx1-ubyte"
        >>> _ = p.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1]))
        >>> read_idx(p).tolist()
        [7, 2, 1]
    """
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise SpecError(f"MNIST file {str(path)!r}: not valid gzip ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise SpecError(
            f"MNIST file {str(path)!r}: got header {raw[:4].hex()!r}, "
            "expected an IDX file of unsigned bytes (00 00 08 <ndim>)"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape, dtype=np.int64))
    if len(raw) != expected:
        raise SpecError(
            f"MNIST file {str(path)!r}: got {len(raw)} bytes, expected {expected} for shape {shape}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


# ---------------------------------------------------------------- CIFAR-10

_CIFAR_LAYOUT = (
    "DIR/cifar-10-batches-py/{" + ",".join(CIFAR_PY_FILES) + "} (python version) or "
    "DIR/cifar-10-batches-bin/{" + ",".join(CIFAR_BIN_FILES) + "} (binary version)"
)


class SafeBatchUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds NumPy arrays and plain containers, nothing else.

    ``find_class`` returns only the NumPy array-reconstruction globals listed
    in the module docstring and raises :class:`pickle.UnpicklingError` for any
    other global, which is what lets us read the CIFAR-10 python batches
    without trusting them.

    Example:
        >>> SafeBatchUnpickler(io.BytesIO(pickle.dumps({b"labels": [1, 2]}))).load()
        {b'labels': [1, 2]}
        >>> SafeBatchUnpickler(io.BytesIO(pickle.dumps(print))).load()
        Traceback (most recent call last):
        ...
        _pickle.UnpicklingError: global builtins.print is not allowed in a CIFAR-10 batch
    """

    def __init__(self, file: io.BufferedIOBase | io.BytesIO) -> None:
        super().__init__(file, encoding="latin1")  # the official batches are Python 2 pickles

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR-10 batch")


def _key(batch: dict[Any, Any], name: str) -> Any:
    for key in (name, name.encode()):
        if key in batch:
            return batch[key]
    raise KeyError(name)


def _read_py_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with path.open("rb") as f:
            batch = SafeBatchUnpickler(f).load()
        data = np.asarray(_key(batch, "data"))
        labels = np.asarray(_key(batch, "labels"))
    except (pickle.UnpicklingError, KeyError, EOFError, TypeError, ValueError) as exc:
        raise SpecError(
            f"CIFAR-10 file {str(path)!r}: not a CIFAR-10 python batch "
            f"(a dict with 'data' uint8 [N, 3072] and 'labels'): {exc}"
        ) from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise SpecError(
            f"CIFAR-10 file {str(path)!r}: got data {data.dtype} {data.shape}, "
            "expected uint8 [N, 3072]"
        )
    if labels.shape != (len(data),) or labels.dtype.kind not in "iu":
        raise SpecError(
            f"CIFAR-10 file {str(path)!r}: got labels {labels.dtype} {labels.shape}, "
            f"expected {len(data)} integers"
        )
    return data, labels.astype(np.int64)


def _read_bin_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % 3073:
        raise SpecError(
            f"CIFAR-10 file {str(path)!r}: got {raw.size} bytes, "
            "expected a multiple of 3073 (1 label byte + 3072 pixel bytes per image)"
        )
    records = raw.reshape(-1, 3073)
    return records[:, 1:].copy(), records[:, 0].astype(np.int64)


def read_cifar10(data_dir: str | None) -> dict[str, np.ndarray]:
    """Read CIFAR-10 from ``data_dir`` (python batches, else binary batches).

    Returns:
        ``{"x": uint8 [N, 3, 32, 32], "y": int64 [N], "x_test": ..., "y_test": ...}``.

    Raises:
        SpecError: neither layout complete (the missing files are named), or a
            file that is not a valid batch, or a label outside 0..9.
    """
    root = _need_dir(data_dir, "cifar10", _CIFAR_LAYOUT)
    layouts = (
        (root / "cifar-10-batches-py", CIFAR_PY_FILES, _read_py_batch),
        (root / "cifar-10-batches-bin", CIFAR_BIN_FILES, _read_bin_batch),
    )
    missing_report = []
    for folder, names, reader in layouts:
        missing = [n for n in names if not (folder / n).is_file()]
        if not missing:
            parts = [reader(folder / n) for n in names]
            out = {
                "x": np.concatenate([p[0] for p in parts[:-1]]).reshape(-1, 3, 32, 32),
                "y": np.concatenate([p[1] for p in parts[:-1]]),
                "x_test": parts[-1][0].reshape(-1, 3, 32, 32),
                "y_test": parts[-1][1],
            }
            for split in ("y", "y_test"):
                if out[split].size and (out[split].min() < 0 or out[split].max() > 9):
                    raise SpecError(f"CIFAR-10 labels in {str(folder)!r}: expected 0..9")
            return out
        missing_report.append(f"{folder.name}/{{{','.join(missing)}}}")
    raise SpecError(
        f"data_dir {str(root)!r}: missing CIFAR-10 files ({' or '.join(missing_report)}); "
        f"expected {_CIFAR_LAYOUT}"
    )

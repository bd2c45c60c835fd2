"""Text corpora for the byte-level language model: the stdlib corpus or a user's file.

The built-in corpus is :data:`STDLIB_FILES`, a fixed list of 25 modules of the
Python standard library's own source, read from ``sysconfig``'s ``stdlib``
directory: every machine with Python has it, so nothing is downloaded. The
files are concatenated in the listed order (raw bytes, no separator) and the
SHA-256 of the result names the corpus; every run records it in
``summary.json`` (``data.corpus_sha256``).

The stdlib changes between Python releases (bug fixes reach patch versions
too), so the corpus is the same only for the same Python build.
:data:`REFERENCE_SHA256` holds the hash of the release steplab's documented
baseline was measured on. When the local corpus differs, training still
runs on it (it is real text of the same kind and size), the summary records
the local hash with ``corpus_is_reference: false``, and a
:class:`CorpusMismatchWarning` says so once per process: compare numbers only
between runs whose ``corpus_sha256`` agree. A missing listed file (a Python
install without its ``.py`` sources) is a :class:`~steplab.errors.SpecError`
naming the files; ``--data-dir`` then gives a corpus instead.

``data_dir`` names a text file (any bytes; tiny-shakespeare's ``input.txt``
works as is), or a directory holding exactly one ``*.txt`` file.

Splits are contiguous: the first 90% of the bytes train, the next 5%
validate, the last 5% test. Each split is cut into non-overlapping windows of
``context + 1`` bytes taken from its start; a window gives the input (its
first ``context`` bytes) and the next-byte targets (its last ``context``).
"""

from __future__ import annotations

import hashlib
import sys
import sysconfig
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from steplab.errors import SpecError

__all__ = [
    "REFERENCE_SHA256",
    "STDLIB_FILES",
    "Corpus",
    "CorpusMismatchWarning",
    "corpus_size",
    "load_corpus",
    "split_windows",
    "window_counts",
]

#: modules of the standard library that make the built-in corpus, in order (1.28 MB on 3.11)
STDLIB_FILES: tuple[str, ...] = (
    "argparse.py", "ast.py", "calendar.py", "collections/__init__.py", "configparser.py",
    "csv.py", "dataclasses.py", "difflib.py", "enum.py", "fractions.py", "functools.py",
    "heapq.py", "inspect.py", "json/decoder.py", "json/encoder.py", "logging/__init__.py",
    "pprint.py", "random.py", "shutil.py", "statistics.py", "string.py", "textwrap.py",
    "typing.py", "subprocess.py", "tokenize.py",
)

#: Python version the documented baseline ran on -> SHA-256 of its stdlib corpus
REFERENCE_SHA256: dict[str, str] = {
    "3.11.7": "5ff537332b148aad25328471272db73137a3cac861f89ff658a60e8bd44280e4",
}

#: split shares of the corpus bytes (train, val; test gets the rest)
SPLITS = (0.90, 0.05)


class CorpusMismatchWarning(UserWarning):
    """The local stdlib corpus differs from the one the documented baseline used."""


@dataclass(frozen=True)
class Corpus:
    """The bytes a language model trains on and where they came from.

    Attributes:
        data: the corpus bytes.
        source: ``"stdlib"`` or the path of the user's text file.
        sha256: hex SHA-256 of ``data``.
        is_reference: the stdlib corpus equals the documented one (None for user files).
    """

    data: bytes
    source: str
    sha256: str
    is_reference: bool | None

    def describe(self) -> dict[str, object]:
        """``{"corpus", "corpus_sha256", "corpus_bytes", "corpus_is_reference", "python"}``."""
        return {
            "corpus": self.source,
            "corpus_sha256": self.sha256,
            "corpus_bytes": len(self.data),
            "corpus_is_reference": self.is_reference,
            "python": ".".join(map(str, sys.version_info[:3])),
        }


_WARNED: set[str] = set()


def stdlib_dir() -> Path:
    """The directory of this interpreter's standard-library sources."""
    return Path(sysconfig.get_paths()["stdlib"])


def _stdlib_corpus() -> Corpus:
    root = stdlib_dir()
    missing = [name for name in STDLIB_FILES if not (root / name).is_file()]
    if missing:
        raise SpecError(
            f"stdlib corpus: {str(root)!r} lacks {', '.join(missing)}; expected the Python "
            "standard library's .py sources (or pass --data-dir with a text file)"
        )
    data = b"".join((root / name).read_bytes() for name in STDLIB_FILES)
    digest = hashlib.sha256(data).hexdigest()
    version = ".".join(map(str, sys.version_info[:3]))
    is_reference = digest in REFERENCE_SHA256.values()
    if not is_reference and digest not in _WARNED:
        _WARNED.add(digest)
        known = ", ".join(f"Python {v}" for v in REFERENCE_SHA256)
        warnings.warn(
            f"stdlib corpus of Python {version} has SHA-256 {digest[:12]}..., not the "
            f"documented baseline's ({known}); results are comparable only between runs "
            "with the same corpus_sha256",
            CorpusMismatchWarning,
            stacklevel=3,
        )
    return Corpus(data, "stdlib", digest, is_reference)


def _text_file(data_dir: str) -> Path:
    path = Path(data_dir).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        found = sorted(path.glob("*.txt"))
        if len(found) == 1:
            return found[0]
        raise SpecError(
            f"data_dir: {data_dir!r} holds {len(found)} .txt files; expected a text file, "
            "or a directory with exactly one .txt file (e.g. tiny-shakespeare's input.txt)"
        )
    raise SpecError(f"data_dir: got {data_dir!r}, which does not exist; expected a text file")


def load_corpus(data_dir: str | None = None) -> Corpus:
    """The built-in stdlib corpus, or the text file ``data_dir`` names.

    Args:
        data_dir: None for the stdlib corpus; else a text file, or a directory
            holding exactly one ``*.txt`` file.

    Returns:
        The :class:`Corpus`.

    Raises:
        SpecError: a listed stdlib file is missing, or ``data_dir`` is not a
            readable text file (or holds none or several ``.txt`` files).

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "input.txt")
        >>> _ = open(path, "wb").write(b"hello")
        >>> c = load_corpus(path)
        >>> c.data, c.sha256[:8], c.is_reference
        (b'hello', '2cf24dba', None)
    """
    if data_dir is None:
        return _stdlib_corpus()
    path = _text_file(data_dir)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SpecError(f"data_dir: cannot read {str(path)!r} ({exc}); expected a text file") \
            from None
    return Corpus(data, str(path), hashlib.sha256(data).hexdigest(), None)


def corpus_size(data_dir: str | None = None) -> int | None:
    """Bytes of the corpus without reading it (None when it cannot be found)."""
    try:
        if data_dir is None:
            return sum((stdlib_dir() / name).stat().st_size for name in STDLIB_FILES)
        return _text_file(data_dir).stat().st_size
    except (OSError, SpecError):
        return None


def _bounds(n: int) -> tuple[int, int]:
    return int(n * SPLITS[0]), int(n * (SPLITS[0] + SPLITS[1]))


def window_counts(n_bytes: int, context: int) -> dict[str, int]:
    """Windows per split that :func:`split_windows` cuts from ``n_bytes`` bytes.

    Example:
        >>> window_counts(200, 4)
        {'train': 44, 'val': 2, 'test': 2}
    """
    a, b = _bounds(n_bytes)
    return {name: max(0, (size - 1) // context)
            for name, size in (("train", a), ("val", b - a), ("test", n_bytes - b))}


def _windows(chunk: Tensor, context: int) -> tuple[Tensor, Tensor]:
    n = (len(chunk) - 1) // context
    x = chunk[: n * context].view(n, context)
    y = chunk[1 : n * context + 1].view(n, context)
    return x.clone(), y.clone()


def split_windows(
    data: bytes, context: int
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """Cut ``data`` into train/val/test windows of ``context`` bytes and their next bytes.

    Args:
        data: the corpus.
        context: bytes the model sees per sequence.

    Returns:
        ``((x_train, y_train), (x_val, y_val), (x_test, y_test))``, int64
        tensors ``[n, context]``; ``y`` is ``x`` shifted by one byte.

    Raises:
        SpecError: a split too short for one window.

    Example:
        >>> (xt, yt), _, _ = split_windows(bytes(range(200)), 4)
        >>> xt[0].tolist(), yt[0].tolist(), len(xt)
        ([0, 1, 2, 3], [1, 2, 3, 4], 44)
    """
    tokens = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(torch.int64)
    n = len(tokens)
    a, b = _bounds(n)
    out = []
    for name, chunk in (("train", tokens[:a]), ("val", tokens[a:b]), ("test", tokens[b:])):
        if len(chunk) < context + 1:
            raise SpecError(
                f"corpus: got {n} bytes, so the {name} split has {len(chunk)}; expected at "
                f"least {context + 1} bytes per split (about {int((context + 1) / 0.05)} in all)"
            )
        out.append(_windows(chunk, context))
    return out[0], out[1], out[2]

"""Byte-level transformer language models: ``byte-lm`` (CPU) and ``byte-lm-gpu``.

A decoder-only transformer over bytes (vocabulary 256): token and learned
position embeddings, ``n_layers`` pre-LayerNorm blocks (``x + attn(ln(x))``,
then ``x + mlp(ln(x))``, MLP width 4x with GELU), causal self-attention through
:func:`torch.nn.functional.scaled_dot_product_attention` (``is_causal=True``),
a final LayerNorm and a linear output head (not tied to the embedding: a tied
head scores the current byte highest at initialisation, which on source code,
full of repeated spaces, puts the initial loss 0.07 nats under ln 256). No
dropout. Weights are drawn from the run's generator only: every Linear and
Embedding weight from N(0, 0.02²), the two residual output projections of each
block from N(0, (0.02 / sqrt(2 n_layers))²) (GPT-2's scaling), biases zero,
LayerNorms one/zero. With these small weights the logits start near zero,
so the loss at initialisation is close to ln(256) = 5.545 nats.

Data: :mod:`steplab.tasks.text` (the listed stdlib corpus, or ``--data-dir``
with any text file). Metrics: ``loss`` (mean next-byte cross-entropy, nats)
and ``bpb``, bits per byte = loss / ln 2 (lower is better). The target is
``test_bpb`` at most the documented value.

References:
    Vaswani et al., "Attention Is All You Need" (2017); Radford et al.,
    "Language Models are Unsupervised Multitask Learners" (GPT-2, 2019) for
    pre-LayerNorm blocks and residual-projection scaling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from steplab.tasks.base import Target, TaskData, task_info
from steplab.tasks.text import (
    STDLIB_FILES,
    corpus_size,
    load_corpus,
    split_windows,
    window_counts,
)

__all__ = ["LM_SIZES", "ByteLMTask", "ByteTransformer", "LMSize"]

VOCAB = 256
#: sequences per forward pass when a metric runs over a whole split
_EVAL_ROWS = 64


@dataclass(frozen=True)
class LMSize:
    """Shape and defaults of one byte-LM preset.

    Attributes:
        context: bytes per sequence.
        d_model: width of the residual stream.
        n_layers: transformer blocks.
        n_heads: attention heads (``d_model`` must divide by it).
        batch_size: default sequences per step.
        steps: default steps.
        lr: default Adam learning rate.
        target_bpb: the documented target, test bits per byte at most this.
    """

    context: int
    d_model: int
    n_layers: int
    n_heads: int
    batch_size: int
    steps: int
    lr: float
    target_bpb: float


class _Block(nn.Module):
    """Pre-LayerNorm transformer block: causal self-attention, then a GELU MLP."""

    def __init__(self, d: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.ln1 = nn.LayerNorm(d, device="meta")
        self.qkv = nn.Linear(d, 3 * d, device="meta")
        self.proj = nn.Linear(d, d, device="meta")
        self.ln2 = nn.LayerNorm(d, device="meta")
        self.fc = nn.Linear(d, 4 * d, device="meta")
        self.out = nn.Linear(4 * d, d, device="meta")

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        # [b, t, d] -> [b, heads, t, d / heads]
        q, k, v = (z.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2) for z in (q, k, v))
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(att.transpose(1, 2).reshape(b, t, d))
        out: Tensor = x + self.out(F.gelu(self.fc(self.ln2(x))))
        return out


class ByteTransformer(nn.Module):
    """Decoder-only transformer over bytes; ``forward(x[b, t]) -> logits[b, t, 256]``.

    Args:
        size: the preset (:class:`LMSize`).
        generator: source of every initial weight (see the module docstring).

    Example:
        >>> size = LMSize(8, 16, 1, 2, 4, 10, 1e-3, 3.0)
        >>> model = ByteTransformer(size, torch.Generator().manual_seed(0))
        >>> tuple(model(torch.zeros(2, 8, dtype=torch.long)).shape)
        (2, 8, 256)
    """

    def __init__(self, size: LMSize, generator: torch.Generator) -> None:
        super().__init__()
        if size.d_model % size.n_heads:
            raise ValueError(f"d_model {size.d_model} must be a multiple of n_heads {size.n_heads}")
        self.tok = nn.Embedding(VOCAB, size.d_model, device="meta")
        self.pos = nn.Embedding(size.context, size.d_model, device="meta")
        self.blocks = nn.ModuleList(
            _Block(size.d_model, size.n_heads) for _ in range(size.n_layers)
        )
        self.ln_f = nn.LayerNorm(size.d_model, device="meta")
        self.head = nn.Linear(size.d_model, VOCAB, bias=False, device="meta")
        self._init(size, generator)

    def _init(self, size: LMSize, generator: torch.Generator) -> None:
        self.to_empty(device="cpu")
        residual_std = 0.02 / math.sqrt(2 * size.n_layers)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith(("proj.weight", "out.weight")):
                    p.normal_(0.0, residual_std, generator=generator)
                elif p.ndim == 2:
                    p.normal_(0.0, 0.02, generator=generator)
                elif "ln" in name and name.endswith("weight"):
                    p.fill_(1.0)
                else:
                    p.zero_()

    def forward(self, x: Tensor) -> Tensor:
        t = x.shape[1]
        h = self.tok(x) + self.pos.weight[:t]
        for block in self.blocks:
            h = block(h)
        out: Tensor = self.head(self.ln_f(h))
        return out


class ByteLMTask:
    """A byte-level language model on the stdlib corpus or a text file (see the module docs).

    Args:
        name: registry name.
        size: the preset.
        data_dir: default text file (None: the stdlib corpus).

    Example:
        >>> task = ByteLMTask("tiny", LMSize(8, 16, 1, 2, 4, 10, 1e-3, 3.0))
        >>> model = task.build_model(torch.Generator().manual_seed(0))
        >>> x = torch.randint(0, 256, (3, 8), generator=torch.Generator().manual_seed(0))
        >>> round(float(task.loss(model(x), x)), 1)  # about ln(256) = 5.545 at initialisation
        5.5
    """

    default_lr: float | None
    trajectory = False

    def __init__(self, name: str, size: LMSize, data_dir: str | None = None) -> None:
        self.name = name
        self.size = size
        self.data_dir = data_dir
        self.description = (
            f"byte-level transformer LM ({size.n_layers} layers, d {size.d_model}, context "
            f"{size.context}) on {len(STDLIB_FILES)} stdlib modules or --data-dir text"
        )
        self.target = Target("test_bpb", size.target_bpb, "min")
        self.default_batch_size = size.batch_size
        self.default_steps = size.steps
        self.default_lr = size.lr

    def load_data(self, data_dir: str | None = None) -> TaskData:
        """Windows of the corpus (int64 ``[n, context]``), its hash in ``TaskData.meta``."""
        corpus = load_corpus(data_dir if data_dir is not None else self.data_dir)
        (xt, yt), (xv, yv), (xs, ys) = split_windows(corpus.data, self.size.context)
        return TaskData(xt, yt, xv, yv, xs, ys, meta=corpus.describe())

    def build_model(self, generator: torch.Generator) -> nn.Module:
        """A :class:`ByteTransformer` of this preset's size, initialised from ``generator``."""
        return ByteTransformer(self.size, generator)

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        """Mean next-byte cross-entropy in nats (computed in float32)."""
        return F.cross_entropy(output.float().reshape(-1, VOCAB), target.reshape(-1))

    def metrics(self, model: nn.Module, x: Tensor, y: Tensor) -> dict[str, float]:
        """``loss`` (nats per byte) and ``bpb`` (bits per byte) over every byte of ``(x, y)``."""
        was_training = model.training
        model.eval()
        total = 0.0
        with torch.no_grad():
            for start in range(0, len(x), _EVAL_ROWS):
                out = model(x[start : start + _EVAL_ROWS]).float()
                yy = y[start : start + _EVAL_ROWS]
                total += float(F.cross_entropy(out.reshape(-1, VOCAB), yy.reshape(-1),
                                               reduction="sum"))
        model.train(was_training)
        loss = total / max(y.numel(), 1)
        return {"loss": loss, "bpb": loss / math.log(2)}

    def info(self) -> dict[str, Any]:
        """As for every task, plus ``context``, ``corpus_files`` and the default ``data_dir``.

        ``sizes`` (windows per split) come from the corpus files' sizes, not their bytes.
        """
        n_bytes = corpus_size(self.data_dir)
        sizes = None if n_bytes is None else window_counts(n_bytes, self.size.context)
        out = task_info(self, sizes)
        out |= {"context": self.size.context, "corpus_files": list(STDLIB_FILES),
                "data_dir": self.data_dir}
        return out


#: registry name -> preset. The CPU default reaches its target in about a minute on
#: two cores (docs/tasks.md, from benchmarks/lm_baseline.py); the GPU preset is larger.
LM_SIZES: dict[str, LMSize] = {
    "byte-lm": LMSize(context=64, d_model=64, n_layers=2, n_heads=4, batch_size=32,
                      steps=800, lr=3e-3, target_bpb=2.7),
    "byte-lm-gpu": LMSize(context=256, d_model=384, n_layers=6, n_heads=6, batch_size=64,
                          steps=5000, lr=1e-3, target_bpb=2.0),
}

"""Small models and trained optimizers for the state-layer tests."""

from __future__ import annotations

import torch
from torch import nn

from steplab.optim import create_optimizer


class Net(nn.Module):
    """A tiny MLP with a norm layer (a buffer too) whose parameter order can be reversed."""

    encoder: nn.Linear
    norm: nn.BatchNorm1d
    head: nn.Linear

    def __init__(self, reverse: bool = False, width: int = 6) -> None:
        super().__init__()
        layers = {"encoder": nn.Linear(4, width), "norm": nn.BatchNorm1d(width),
                  "head": nn.Linear(width, 3)}
        for name in reversed(layers) if reverse else layers:
            self.add_module(name, layers[name])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(torch.tanh(self.norm(self.encoder(x))))
        return out


def make_net(seed: int = 0, reverse: bool = False, width: int = 6) -> Net:
    """A Net whose weights depend only on ``seed`` (not on the module order)."""
    net = Net(reverse, width)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _name, p in sorted(net.named_parameters()):
            p.copy_(torch.randn(p.shape, generator=gen))
    return net


def train_steps(model: nn.Module, opt: torch.optim.Optimizer, steps: int, seed: int = 1) -> None:
    """A few optimizer steps on fixed random data."""
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(8, 4, generator=gen)
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()


def trained(spec: str = "adamw(lr=0.01)", steps: int = 3, seed: int = 0,
            reverse: bool = False) -> tuple[Net, torch.optim.Optimizer]:
    """A Net and its optimizer after ``steps`` steps."""
    model = make_net(seed, reverse)
    opt = create_optimizer(spec, model)
    train_steps(model, opt, steps)
    return model, opt

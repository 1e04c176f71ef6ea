"""Small torch helpers shared by the cross-modal models (device choice, activations, seeding)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

Log = Callable[[str], None]

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "linear": nn.Identity,
}


def activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose from {sorted(ACTIVATIONS)}") from None


def pick_device(name: str) -> torch.device:
    """``"auto"`` is CUDA when present, else CPU; anything else is passed to ``torch.device``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def quiet(_: str) -> None:
    """The default progress log: say nothing."""


def mlp(sizes: list[int], act: str, final_act: bool) -> nn.Sequential:
    """Fully connected layers ``sizes[0] -> ... -> sizes[-1]`` with ``act`` between them
    (and after the last one if ``final_act``): paper 3, eq. 3, ``a_{i+1} = f(W_i a_i + b_i)``."""
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(d_in, d_out))
        if i < len(sizes) - 2 or final_act:
            layers.append(activation(act))
    return nn.Sequential(*layers)


def cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """A state_dict with every tensor on the CPU (what gets pickled)."""
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}

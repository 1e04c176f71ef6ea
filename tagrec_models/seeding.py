"""One seed for Python, NumPy and torch, so every run is reproducible (RecBole's init_seed)."""

from __future__ import annotations

import random

import numpy as np


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python's, NumPy's and torch's global generators; return a fresh NumPy Generator.

    Library code should prefer the returned generator (or one derived from the same seed) over
    global state; the global seeding is for third-party code that draws from it.
    """
    random.seed(seed)
    np.random.seed(seed % (2**32))
    try:
        import torch
    except ImportError:  # torch is optional for the non-neural parts of the library
        pass
    else:
        torch.manual_seed(seed)
    return np.random.default_rng(seed)

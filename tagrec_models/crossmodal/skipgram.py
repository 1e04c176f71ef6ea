"""Skip-gram tag vectors with negative sampling (paper 3, section 2, eqs. 1-2; Mikolov et al. 2013).

The "sentences" are the training annotations: each annotation (the tag set of one training post)
is one sentence, and no context window crosses from one annotation into the next, because
consecutive annotations are unrelated images. A tag set has no order, so each annotation is
written out ``orderings`` times, each time in a fresh seeded random order, and every centre tag
predicts the tags within ``window`` positions of it (window 5, as the paper says). With the
word2vec "dynamic window" (``dynamic_window=True``) the effective window of each centre is drawn
uniformly from 1..window, so nearer tags count more; on Corel5k (at most 5 tags per image) a
window of 5 covers the whole annotation either way, and the orderings matter only through the
dynamic window.

Eq. 2 is maximised in its standard form, ``log s(O_c . I_w) + sum_k log s(-O_k . I_w)`` with
``s`` the sigmoid: the paper's text drops the minus sign on the negatives, which would reward
negatives for looking like contexts. The ``negatives`` noise tags are drawn from the unigram
distribution raised to ``noise_power`` (3/4, Mikolov et al.). Vectors are the input vectors I.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from tagrec_models.crossmodal._torch import Log, pick_device, quiet


@dataclass(frozen=True)
class SkipGramConfig:
    """Hyper-parameters of ``SkipGram``."""

    dim: int = 100
    """Size of a tag vector (paper: unspecified)."""
    window: int = 5
    """Context window (paper: 5)."""
    negatives: int = 5
    """Negative samples m per (centre, context) pair (paper 3, eq. 2)."""
    noise_power: float = 0.75
    """Noise distribution P(w) ~ count(w) ** noise_power."""
    orderings: int = 5
    """Shuffled copies of each annotation (a tag set has no order)."""
    dynamic_window: bool = True
    epochs: int = 15
    batch_size: int = 1024
    lr: float = 0.01
    seed: int = 0
    device: str = "auto"


def context_pairs(
    annotations: Sequence[np.ndarray], window: int, orderings: int, dynamic: bool, rng: np.random.Generator
) -> np.ndarray:
    """All (centre, context) tag pairs of the shuffled annotations, as an int64 ``[n_pairs, 2]``."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if orderings < 1:
        raise ValueError(f"orderings must be >= 1, got {orderings}")
    pairs: list[tuple[int, int]] = []
    for tags in annotations:
        tags = np.asarray(tags, dtype=np.int64)
        if len(tags) < 2:
            continue  # a one-tag annotation has no context
        for _ in range(orderings):
            sentence = rng.permutation(tags)
            for i, centre in enumerate(sentence):
                reach = int(rng.integers(1, window + 1)) if dynamic else window
                for j in range(max(0, i - reach), min(len(sentence), i + reach + 1)):
                    if j != i:
                        pairs.append((int(centre), int(sentence[j])))
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


class _SGNS(nn.Module):
    def __init__(self, n_words: int, dim: int) -> None:
        super().__init__()
        self.inp = nn.Embedding(n_words, dim)
        self.out = nn.Embedding(n_words, dim)
        # word2vec's initialisation: small uniform inputs, zero outputs.
        nn.init.uniform_(self.inp.weight, -0.5 / dim, 0.5 / dim)
        nn.init.zeros_(self.out.weight)

    def loss(self, centre: torch.Tensor, context: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        i = self.inp(centre)  # [b, d]
        pos = (self.out(context) * i).sum(-1)
        neg = torch.bmm(self.out(noise), i.unsqueeze(-1)).squeeze(-1)  # [b, m]
        return -(nn.functional.logsigmoid(pos) + nn.functional.logsigmoid(-neg).sum(-1)).mean()


class SkipGram:
    """``fit(annotations, n_tags)`` -> ``vectors`` ``[n_tags, dim]`` float32 (input vectors)."""

    def __init__(self, config: SkipGramConfig | None = None) -> None:
        self.config = config or SkipGramConfig()
        self.vectors: np.ndarray | None = None
        self.history: list[dict[str, float]] = []

    def fit(self, annotations: Sequence[np.ndarray], n_tags: int, log: Log = quiet) -> "SkipGram":
        cfg = self.config
        if n_tags < 1:
            raise ValueError(f"n_tags must be >= 1, got {n_tags}")
        for tags in annotations:
            if len(tags) and (np.min(tags) < 0 or np.max(tags) >= n_tags):
                raise ValueError(f"an annotation holds a tag index outside 0..{n_tags - 1}: {tags}")
        rng = np.random.default_rng(cfg.seed)
        counts = np.bincount(np.concatenate([np.asarray(a, np.int64) for a in annotations] or [np.zeros(0, np.int64)]), minlength=n_tags)
        pairs = context_pairs(annotations, cfg.window, cfg.orderings, cfg.dynamic_window, rng)
        torch.manual_seed(cfg.seed)
        model = _SGNS(n_tags, cfg.dim)
        if len(pairs) == 0:
            # No annotation has two tags: there is no context to learn from, and the vectors stay
            # at their (seeded, distinct) initial values. Say so rather than pretend.
            log("skip-gram: no annotation has two tags; tag vectors are left at initialisation")
            self.vectors = model.inp.weight.detach().numpy().astype(np.float32).copy()
            return self
        device = pick_device(cfg.device)
        model.to(device)
        noise = torch.tensor(np.power(counts.astype(np.float64), cfg.noise_power), dtype=torch.float64)
        if noise.sum() <= 0:
            noise = torch.ones(n_tags, dtype=torch.float64)
        noise = noise / noise.sum()
        gen = torch.Generator().manual_seed(cfg.seed)
        data = torch.from_numpy(pairs)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        for epoch in range(cfg.epochs):
            order = torch.randperm(len(data), generator=gen)
            total = 0.0
            for start in range(0, len(data), cfg.batch_size):
                batch = data[order[start : start + cfg.batch_size]]
                neg = torch.multinomial(noise, len(batch) * cfg.negatives, replacement=True, generator=gen)
                loss = model.loss(
                    batch[:, 0].to(device), batch[:, 1].to(device), neg.view(len(batch), -1).to(device)
                )
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(batch)
            self.history.append({"epoch": epoch + 1, "loss": total / len(data)})
            if (epoch + 1) % 5 == 0 or epoch + 1 == cfg.epochs:
                log(f"skip-gram epoch {epoch + 1}/{cfg.epochs}: loss {total / len(data):.4f} ({len(data)} pairs)")
        self.vectors = model.inp.weight.detach().cpu().numpy().astype(np.float32).copy()
        return self

    def state(self) -> dict:
        return {"config": asdict(self.config), "vectors": self.vectors, "history": self.history}

    @classmethod
    def from_state(cls, state: dict) -> "SkipGram":
        model = cls(SkipGramConfig(**state["config"]))
        model.vectors, model.history = state["vectors"], state["history"]
        return model

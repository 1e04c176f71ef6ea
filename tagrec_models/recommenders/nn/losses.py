"""Ranking losses of paper 1 and its baselines, vectorised over a mini-batch of posts.

Every loss returns one value per post (shape ``[batch]``, to be minimised) and is exactly zero,
with a zero gradient, for a post that has no (relevant, irrelevant) pair: a post whose tag set
is empty or holds every tag. Such posts would otherwise divide by zero in the pair
normalisers; the guard keeps the masked-out branch finite so that no NaN leaks into the
gradient (``torch.where`` alone does not stop a NaN gradient from the unused branch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check(scores: torch.Tensor, positives: torch.Tensor) -> None:
    if scores.dim() != 2:
        raise ValueError(f"scores must be [batch, n_tags], got shape {tuple(scores.shape)}")
    if positives.shape != scores.shape:
        raise ValueError(
            f"positives {tuple(positives.shape)} and scores {tuple(scores.shape)} differ in shape"
        )


def sample_negatives(
    positives: torch.Tensor, n: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``n`` distinct irrelevant tags per post, uniformly (paper 1, Algorithm 1, line 7).

    ``positives`` is a bool ``[batch, n_tags]`` mask of ``T+``. Returns ``(indices, valid)``, both
    ``[batch, min(n, n_tags)]``: ``valid`` is False where the post has fewer than ``n``
    irrelevant tags and the slot holds a relevant tag instead (it must be ignored).

    Drawing one uniform key per tag, pushing the relevant tags' keys above every irrelevant one
    and keeping the ``n`` smallest keys is a uniform sample without replacement from ``T-``,
    done for the whole batch at once. The keys come from ``generator`` (on the CPU), so the draw
    is the same on every device for a given seed.
    """
    if n < 1:
        raise ValueError(f"the number of sampled negatives must be >= 1, got {n}")
    keys = torch.rand(positives.shape, generator=generator).to(positives.device)
    keys = keys.masked_fill(positives, 2.0)
    k = min(n, positives.shape[1])
    values, indices = torch.topk(keys, k, dim=1, largest=False)
    return indices, values < 2.0


def post_bpr_loss(
    scores: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor,
    negative_valid: torch.Tensor,
) -> torch.Tensor:
    """Post-wise BPR (paper 1, eq. 8), negated so that it is minimised.

    ``loss(u, i) = -1 / (|T+| |T-|) * sum_{t+ in T+, t- in T-} ln sigmoid(y(t+) - y(t-))`` with
    ``T-`` the ``N`` sampled irrelevant tags (``negatives`` / ``negative_valid`` from
    ``sample_negatives``). Autograd of this gives paper 1, eq. 9 and 10. Note: paper 1, eq. 9 writes the
    normaliser as ``1 / (|T+| + |T-|)``, which contradicts paper 1, eq. 8; we follow paper 1, eq. 8, the
    objective, because the gradient must be the gradient of the loss being reported.
    """
    _check(scores, positives)
    pos = positives.bool()
    neg_scores = torch.gather(scores, 1, negatives)  # [B, N]
    diff = scores.unsqueeze(2) - neg_scores.unsqueeze(1)  # [B, T, N]: y(t) - y(t-)
    pair = pos.unsqueeze(2) & negative_valid.unsqueeze(1)
    n_pairs = pair.sum(dim=(1, 2))
    valid = n_pairs > 0
    per_post = -(F.logsigmoid(diff) * pair).sum(dim=(1, 2)) / n_pairs.clamp(min=1)
    return per_post * valid


def bpmll_loss(scores: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """BP-MLL global error (Zhang & Zhou 2006, eq. 3), one value per post.

    ``E_i = 1 / (|Y_i| |Ybar_i|) * sum_{k in Y_i, l in Ybar_i} exp(-(c_k - c_l))``. The double sum
    factorises as ``(sum_k exp(-c_k)) (sum_l exp(c_l))``, so it is computed in O(n_tags) per post
    in log space (two log-sum-exps) instead of over all pairs. A post with an empty or complete
    tag set has no pair and contributes 0 (the guard of the module docstring).
    """
    _check(scores, positives)
    pos = positives.bool()
    neg = ~pos
    valid = pos.any(dim=1) & neg.any(dim=1)
    # For invalid posts, pretend every tag is on both sides so every term stays finite; the
    # result is multiplied by 0 below.
    pos_safe = pos | ~valid.unsqueeze(1)
    neg_safe = neg | ~valid.unsqueeze(1)
    minus_inf = torch.finfo(scores.dtype).min
    log_pos = torch.logsumexp((-scores).masked_fill(~pos_safe, minus_inf), dim=1)
    log_neg = torch.logsumexp(scores.masked_fill(~neg_safe, minus_inf), dim=1)
    log_norm = torch.log(pos_safe.sum(1).to(scores.dtype)) + torch.log(
        neg_safe.sum(1).to(scores.dtype)
    )
    return torch.exp(log_pos + log_neg - log_norm) * valid


def pairwise_hinge_loss(
    scores: torch.Tensor, positives: torch.Tensor, margin: float = 1.0
) -> torch.Tensor:
    """Pairwise ranking hinge of Gong et al. 2013 (eq. 2 there), averaged over the post's pairs.

    ``1 / (|Y| |Ybar|) * sum_{j in Y, k in Ybar} max(0, margin - c_j + c_k)``. Gong et al. sum
    without the normaliser; we average over pairs (as BP-MLL does) so that posts with many tags
    do not dominate the batch, and the learning rate means the same for every post.
    """
    _check(scores, positives)
    pos = positives.bool()
    neg = ~pos
    pair = pos.unsqueeze(2) & neg.unsqueeze(1)  # [B, T, T]: (relevant j, irrelevant k)
    n_pairs = pair.sum(dim=(1, 2))
    hinge = F.relu(margin - scores.unsqueeze(2) + scores.unsqueeze(1))
    per_post = (hinge * pair).sum(dim=(1, 2)) / n_pairs.clamp(min=1)
    return per_post * (n_pairs > 0)

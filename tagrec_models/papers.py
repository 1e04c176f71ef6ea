"""The three papers' tables and which registered models a dataset gets, read off the models'
own declarations (``Recommender.papers``, ``needs``, ``personalised``), so that adding a model
file is all it takes to get its model asset, its paper-table row and its leaderboard row.

A dataset gets a model when it has the model's inputs (``groups`` needs groups, a personalised
model needs users) and either the model is in no paper or one of its papers applies to the
dataset (papers 1 and 2 need users; paper 3 needs only images and tags).
"""

from __future__ import annotations

from dataclasses import dataclass

from tagrec_models.recommenders.base import PAPER_ROLES, Recommender
from tagrec_models.recommenders.registry import all_recommenders


@dataclass(frozen=True)
class Paper:
    key: str
    title: str
    needs_users: bool


PAPERS: dict[str, Paper] = {
    paper.key: paper
    for paper in (
        Paper("paper1", "Paper 1 (Nguyen et al., CNN-PerMLP)", needs_users=True),
        Paper("paper2", "Paper 2 (Liu Zheng et al. 2020, VLAD + weighted random walk)", needs_users=True),
        Paper("paper3", "Paper 3 (Zhang et al., DMFR & DCCA)", needs_users=False),
    )
}


@dataclass(frozen=True)
class DatasetShape:
    """What a dataset offers the models: users (posts by identified owners) and groups."""

    has_users: bool
    has_groups: bool


def has_inputs(model: type[Recommender], shape: DatasetShape) -> bool:
    if model.personalised and not shape.has_users:
        return False
    if model.annotation_only and shape.has_users:
        return False
    return "groups" not in model.needs or shape.has_groups


def papers_for(shape: DatasetShape) -> list[Paper]:
    return [paper for paper in PAPERS.values() if shape.has_users or not paper.needs_users]


def dataset_models(shape: DatasetShape) -> list[type[Recommender]]:
    """Every registered model the dataset gets, in name order."""
    applicable = {paper.key for paper in papers_for(shape)}
    return [
        model for model in all_recommenders()
        if has_inputs(model, shape) and (not model.papers or applicable & set(model.papers))
    ]


def _row_order(paper: str, model: type[Recommender]) -> tuple[int, str]:
    return PAPER_ROLES.index(model.papers[paper]), model.name


def paper_methods(shape: DatasetShape) -> dict[str, tuple[str, ...]]:
    """Paper key -> its table's models for this dataset: the proposed model first, then the
    ablations, the paper's baselines, and the models beyond the paper, by name within each."""
    models = dataset_models(shape)
    tables: dict[str, tuple[str, ...]] = {}
    for paper in papers_for(shape):
        members = sorted((m for m in models if paper.key in m.papers), key=lambda m: _row_order(paper.key, m))
        if members:
            tables[paper.key] = tuple(m.name for m in members)
    return tables


def check_declarations(model: type[Recommender]) -> None:
    """Fail loudly on a declaration the pipeline could not use."""
    for paper, role in model.papers.items():
        if paper not in PAPERS:
            raise ValueError(f"{model.name}: unknown paper {paper!r} in papers; known: {sorted(PAPERS)}")
        if role not in PAPER_ROLES:
            raise ValueError(f"{model.name}: role {role!r} in {paper} is not one of {PAPER_ROLES}")

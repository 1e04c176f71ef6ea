"""Every model asset of a dataset, each paper's results table and paper 3's CCS table, built
from the registered models' own declarations (``tagrec_models.papers``): a new model file gets
its asset, its paper-table row and its leaderboard row with no edit here.

A model shared by two papers (MP) is one asset feeding both tables.
"""

from functools import partial

import dagster as dg

from assets.datasets import DatasetSpec
from assets.models import ccs_asset, model_asset, results_asset, tuning_asset
from assets.paper2_sweeps import paper2_sweep_assets
from tagrec_models import reporting
from tagrec_models.papers import DatasetShape, dataset_models, paper_methods
from tagrec_models.recommenders.common_space import CommonSpaceRecommender


def shape_of(spec: DatasetSpec) -> DatasetShape:
    return DatasetShape(has_users=spec.has_users, has_groups=spec.has_groups)


def dataset_methods(spec: DatasetSpec) -> tuple[str, ...]:
    """Every registered model the dataset gets (its model assets and leaderboard rows)."""
    return tuple(model.name for model in dataset_models(shape_of(spec)))


def ccs_methods(spec: DatasetSpec) -> tuple[str, ...]:
    """Paper 3's Table 1: the paper-3 models with a learnt correlation space."""
    return tuple(model.name for model in dataset_models(shape_of(spec))
                 if "paper3" in model.papers and issubclass(model, CommonSpaceRecommender) and model.in_ccs_table)


def paper_assets(spec: DatasetSpec) -> list[dg.AssetsDefinition]:
    papers = paper_methods(shape_of(spec))
    out = [model_asset(spec, name) for name in dataset_methods(spec)]
    out.append(tuning_asset(spec, dataset_methods(spec)))
    if "paper1" in papers:
        out.append(results_asset(
            spec, "paper1_results", papers["paper1"], reporting.paper1_table, ("f1", "F1@K"),
            "Paper 1's comparison (Figures 3 and 4): F1@1..10 (paper 1, eq. 12: F1 of the averaged "
            "P@K and R@K), P@5, R@5 and the mean per-post F1@5 for its methods, mean over "
            "seeds with the std of F1@5; scenarios 'all' test posts and 'new_images'. "
            "Lineage to every model asset. Uncertainty (issue 12): `f1@5_ci_low` / `_ci_high` (95% "
            "bootstrap over test posts) and `p_vs_best` / `tied_with_best` (paired randomisation "
            "test against the method best on validation, Holm-adjusted).",
            intervals={"f1@5": "f1@5", "mean_post_f1@5": "mean_post_f1@5"}, tested=("f1@5",),
        ))
    if "paper2" in papers:
        out.append(results_asset(
            spec, "paper2_results", papers["paper2"], partial(reporting.paper2_table, k=10),
            ("ndcg", "NDCG@k"),
            "Paper 2's comparison (section 5.3, Figures 12-13): NDCG@1..10 and P, R, F1, MAP at "
            "10 tags for the four ablations (UG/noUG x NW/noNW) and the baselines. Uncertainty "
            "(issue 12): 95% bootstrap intervals of NDCG@10 and MAP@10 over test posts, and "
            "`p_vs_best` / `tied_with_best` for NDCG@10 (paired randomisation test against the "
            "method best on validation, Holm-adjusted).",
            intervals={"ndcg@10": "ndcg@10", "map@10": "map@10"}, tested=("ndcg@10",),
        ))
        out.extend(paper2_sweep_assets(spec))
    if "paper3" in papers:
        out.append(results_asset(
            spec, "paper3_results", papers["paper3"], partial(reporting.paper3_table, k=5), None,
            "Paper 3's Table 2: AP, AR, AF per image at 5 tags (paper 3, eqs. 9-11) beside the "
            "Corel5k per-label P / R / F1 / N+, for CCA, KCCA, DCCA, JEC, the CCA-based hybrid, "
            "and beyond the paper TagProp and 2PKNN (the strongest annotation methods of "
            "DESIGN.md's Corel5k table, on the same features). Uncertainty (issue 12): 95% "
            "bootstrap intervals of AF, label F1 and N+ over test images (per-label ones recomputed "
            "from each image's predicted tags), `p_vs_best` (AF) and `label_F1_p_vs_best` (paired "
            "randomisation tests against the method best on validation, Holm-adjusted).",
            bars=("AP", "AR", "AF", "label_F1"),
            intervals={"AF": "f1@5", "label_F1": "label_f1@5", "N+": "n_plus@5"}, tested=("AF", "label_F1"),
        ))
    if ccs_methods(spec):
        out.append(ccs_asset(spec, ccs_methods(spec)))
    return out

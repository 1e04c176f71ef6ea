"""Which recommenders each paper compares, and the results asset of each paper's table.

A dataset gets the papers whose inputs it has: paper 1 and paper 2 need users (and paper 2's
group-aware rows need groups), paper 3 needs only images and tags. A model shared by two
papers (MP) is one asset feeding both tables.
"""

from functools import partial

import dagster as dg

from assets.datasets import DatasetSpec
from assets.models import ccs_asset, model_asset, results_asset
from assets.paper2_sweeps import paper2_sweep_assets
from tagrec_models import reporting

PAPER1 = ("mp", "mp_u", "pitf", "fm", "cnn", "ch_bpmll", "cm55_bpmll", "ch_permlp",
          "cm55_permlp", "cnn_permlp", "pt_permlp")
PAPER2 = ("ug_nw", "ug_nonw", "noug_nw", "noug_nonw", "knn_voting", "personal_knn", "mp_u")
PAPER2_WITHOUT_GROUPS = ("noug_nw", "noug_nonw", "knn_voting")
PAPER3 = ("cca", "kcca", "dcca", "jec", "cca_knn", "tagprop", "two_pknn", "mp")
PAPER3_CCS = ("cca", "kcca", "dcca")

PAPER_NAMES = {
    "paper1": "Paper 1 (Nguyen et al., CNN-PerMLP)",
    "paper2": "Paper 2 (Liu Zheng et al. 2020, VLAD + weighted random walk)",
    "paper3": "Paper 3 (Zhang et al., DMFR & DCCA)",
}


def paper_methods(spec: DatasetSpec) -> dict[str, tuple[str, ...]]:
    papers: dict[str, tuple[str, ...]] = {}
    if spec.has_users:
        papers["paper1"] = PAPER1
        papers["paper2"] = PAPER2 if spec.has_groups else PAPER2_WITHOUT_GROUPS
    papers["paper3"] = PAPER3
    return papers


def paper_assets(spec: DatasetSpec) -> list[dg.AssetsDefinition]:
    papers = paper_methods(spec)
    first_paper: dict[str, str] = {}
    for paper, methods in papers.items():
        for method in methods:
            first_paper.setdefault(method, paper)
    out = [model_asset(spec, m, PAPER_NAMES[p]) for m, p in first_paper.items()]
    if "paper1" in papers:
        out.append(results_asset(
            spec, "paper1_results", papers["paper1"], reporting.paper1_table, ("f1", "F1@K"),
            "Paper 1's comparison (Figures 3 and 4): F1@1..10 (eq. 12, F1 of the averaged "
            "P@K and R@K), P@5, R@5 and the mean per-post F1@5 for the 11 methods, mean over "
            "seeds with the std of F1@5; scenarios 'all' test posts and 'new_images'. "
            "Lineage to every model asset.",
        ))
    if "paper2" in papers:
        out.append(results_asset(
            spec, "paper2_results", papers["paper2"], partial(reporting.paper2_table, k=10),
            ("ndcg", "NDCG@k"),
            "Paper 2's comparison (section 5.3, Figures 12-13): NDCG@1..10 and P, R, F1, MAP at "
            "10 tags for the four ablations (UG/noUG x NW/noNW) and the baselines.",
        ))
        out.extend(paper2_sweep_assets(spec))
    out.append(results_asset(
        spec, "paper3_results", papers["paper3"], partial(reporting.paper3_table, k=5), None,
        "Paper 3's Table 2: AP, AR, AF per image at 5 tags (eqs. 9-11) beside the Corel5k "
        "per-label P / R / F1 / N+, for CCA, KCCA, DCCA, JEC, the CCA-based hybrid, and "
        "beyond the paper TagProp and 2PKNN (the strongest annotation methods of DESIGN.md's "
        "Corel5k table, on the same features).",
        bars=("AP", "AR", "AF", "label_F1"),
    ))
    out.append(ccs_asset(spec, PAPER3_CCS))
    return out

"""Each claim the README makes about the papers, with its paired p-value (issue 12).

Reads ``results.per_post`` (written by every dataset's leaderboard asset) from the data home's
DuckDB database, read-only, and for each claim "A > B" on a dataset prints both methods' test
F1@5 with its 95% bootstrap interval, the difference and the two-sided p-value of the paired
randomisation test on the same test posts (``tagrec_models.evaluation.significance``; no
multiple-comparison correction: each line is one pre-stated claim).

    .venv/bin/python scripts/paper_claims.py                 # $TAGREC_HOME (default ./data)
    .venv/bin/python scripts/paper_claims.py --home data --resamples 10000
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tagrec_models.evaluation import significance as sig
from tagrec_models.paths import DataHome
from tagrec_models.storage.duckdb_store import DuckDBStore

CLAIMS = [
    # (dataset, better, worse, where the claim comes from)
    ("openclipart", "ug_nw", "ug_nonw", "paper 2: the weighted walk helps (UG-NW > UG-noNW)"),
    ("openclipart", "ug_nonw", "noug_nw", "paper 2: groups help (UG-noNW > noUG-NW)"),
    ("openclipart", "noug_nw", "noug_nonw", "paper 2: the weighted walk helps without groups (noUG-NW > noUG-noNW)"),
    ("openclipart", "cnn_permlp", "mp_u", "paper 1: CNN-PerMLP beats the best history baseline MP-u"),
    ("openclipart", "pt_permlp", "mp_u", "beyond paper 1: PT-PerMLP beats MP-u"),
    ("openclipart", "ug_nw", "personal_knn", "UG-NW against personalised neighbours"),
    ("openclipart", "personal_hybrid", "ug_nw", "beyond the papers: the personal hybrid beats UG-NW"),
    ("openclipart", "dcca", "cca", "paper 3: DCCA beats CCA"),
    ("corel5k", "dcca", "cca", "paper 3: DCCA beats CCA"),
    ("corel5k", "dcca", "kcca", "paper 3: DCCA beats KCCA"),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", help="data home (default: $TAGREC_HOME or ./data)")
    parser.add_argument("--resamples", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    home = DataHome.from_env() if args.home is None else DataHome(Path(args.home).resolve())
    store = DuckDBStore(home.duckdb_path)
    with store.reader() as con:
        per_post = con.execute("SELECT * FROM results.per_post").df()
    print("| dataset | claim | A: F1@5 [95% CI] | B: F1@5 [95% CI] | A - B | p (paired) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for dataset, better, worse, claim in CLAIMS:
        rows = per_post[per_post["dataset"] == dataset]
        values = sig.post_values(rows[rows["method"].isin([better, worse])], "f1@5")
        if better not in values or worse not in values:
            print(f"| {dataset} | {claim} | (not materialised) | | | |")
            continue
        a, b = (sig.bootstrap_interval(values[m], sig.f1_statistic, args.resamples, 0.95, args.seed)
                for m in (better, worse))
        p = sig.randomisation_test(values[better], values[worse], sig.f1_statistic, args.resamples, args.seed)
        print(f"| {dataset} | {claim} | {sig.format_interval(a.estimate, a.low, a.high)} | "
              f"{sig.format_interval(b.estimate, b.low, b.high)} | {a.estimate - b.estimate:+.3f} | {p:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

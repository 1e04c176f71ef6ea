"""The ``tagrec`` command (also ``python -m tagrec_models``).

    tagrec suggest --dataset openclipart --user USER [--model NAME] [--k 10] [--seed 0]
                   [--groups g1,g2] [--json] [--device cpu] IMAGE_OR_FOLDER [...]

prints the top K tags of each image for the user from a model the Dagster assets trained
(``tagrec_models.suggest``): the one named, or the best on validation. Exit status: 0 when
every image got tags, 1 when some image could not be read (each is reported), 2 for bad
input (unknown dataset, model or user without a fallback, an asset never materialised).
Nothing is written: the data home is only read.

    tagrec sql [--home DIR] [--csv] [--max-rows N] ["SELECT ..."]

queries the DuckDB database of the data home read-only (``tagrec_models.sql_shell``): the
statements given, else those on stdin, else a minimal prompt. Exit status: 0 when every
statement ran, 1 when one failed, 2 when the database cannot be opened.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence, TextIO

EXIT_OK = 0
EXIT_IMAGE_ERRORS = 1
EXIT_BAD_INPUT = 2


def image_extensions() -> set[str]:
    """File suffixes PIL can open (``.png``, ``.jpg``...), for picking images out of a folder."""
    from PIL import Image

    Image.init()
    return {ext.lower() for ext in Image.registered_extensions()}


def expand_inputs(inputs: Sequence[str]) -> list[str]:
    """Files as given; folders become their image files (by suffix, recursively, sorted). A
    path that does not exist stays in the list so that it is reported as unreadable."""
    extensions = image_extensions()
    paths: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(str(p) for p in path.rglob("*") if p.is_file() and p.suffix.lower() in extensions)
            if not found:
                from tagrec_models.suggest import SuggestError

                raise SuggestError(f"folder {path} holds no image file (suffixes PIL reads, e.g. .png, .jpg)")
            paths.extend(found)
        else:
            paths.append(str(path))
    return paths


def parse_groups(text: str | None) -> list[str]:
    return [g.strip() for g in (text or "").split(",") if g.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tagrec", description="Personalised image tag recommendation.")
    commands = parser.add_subparsers(dest="command", required=True)
    suggest = commands.add_parser(
        "suggest",
        help="suggest tags for new photos with a trained model",
        description="Top K tags of each image for a user, from a model asset materialised under the "
        "data home ($TAGREC_HOME, default ./data). Without --model: the best val_f1@5 of "
        "results.leaderboard; a user not in the training data gets the best non-personalised model.",
    )
    suggest.add_argument("--dataset", required=True, help="dataset name, e.g. openclipart")
    suggest.add_argument("--user", required=True, help="user id as in the dataset (photo owner)")
    suggest.add_argument("--model", default=None, help="recommender name (default: best on validation)")
    suggest.add_argument("--k", type=int, default=10, help="tags per image (default 10)")
    suggest.add_argument("--seed", type=int, default=0, help="which seed's fit of the model (default 0)")
    suggest.add_argument("--groups", default=None, help="comma-separated groups of the new photo (default none)")
    suggest.add_argument("--json", action="store_true", help="machine-readable output")
    suggest.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"),
                         help="where the CNN runs for new images (default cpu)")
    suggest.add_argument("--threads", type=int, default=1,
                         help="torch CPU threads for the CNN (default 1: a few images answer fastest on one "
                         "thread, and extra threads spin when other work holds the cores; 0: all cores)")
    suggest.add_argument("--home", default=None, help="data home (default $TAGREC_HOME or ./data)")
    suggest.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER")
    sql = commands.add_parser(
        "sql",
        help="query the DuckDB database of the data home (read-only)",
        description="Run SQL against <data home>/tagrec.duckdb, read-only, with the duckdb library "
        "that wrote it: the statements given as arguments, else those on stdin, else a prompt "
        "(a statement runs when a line ends with ';'; .quit leaves).",
    )
    sql.add_argument("queries", nargs="*", metavar="SQL", help="statements to run (several per argument, ';'-separated)")
    sql.add_argument("--home", default=None, help="data home (default $TAGREC_HOME or ./data)")
    sql.add_argument("--csv", action="store_true", help="print results as CSV (every row)")
    sql.add_argument("--max-rows", type=int, default=100, help="rows shown per result table (default 100; 0: all)")
    return parser


def run_suggest(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from tagrec_models.paths import DataHome
    from tagrec_models.suggest import MaterialisedDataset, Suggester, choose_model

    if args.k < 1:
        raise_bad(f"--k must be at least 1, got {args.k}")
    if args.threads < 0:
        raise_bad(f"--threads must be 0 (all cores) or more, got {args.threads}")
    home = DataHome(Path(args.home).resolve()) if args.home else DataHome.from_env()
    paths = expand_inputs(args.images)
    groups = parse_groups(args.groups)
    loading = time.perf_counter()
    data = MaterialisedDataset.open(home, args.dataset)
    bundle = data.bundle()
    user_known = str(args.user) in bundle.vocab.user_index()
    choice = choose_model(data, args.model, user_known)
    if choice.note:
        err.write(f"note: user {args.user!r} has no post in the training data of {args.dataset}; {choice.note}\n")
    suggester = Suggester.load(data, choice.name, seed=args.seed, bundle=bundle, device=args.device,
                               threads=args.threads or None)
    load_seconds = time.perf_counter() - loading  # splits, model, side information, backbone
    if groups and "groups" not in suggester.reads:
        err.write(f"note: model {choice.name} does not use groups; --groups ignored\n")
    elif groups:
        for group in suggester.unknown_groups(groups):
            err.write(f"note: group {group!r} has no photo in {args.dataset}; the model cannot use it, ignored\n")
    if suggester.content_blind:
        err.write(f"note: model {choice.name} does not look at the image; its tags are the same for any photo\n")
    if suggester.verified:
        shown = ", ".join(f"{n} {v:.4f}" for n, v in suggester.verified.items())
        err.write(f"note: the features of {args.dataset} record no settings; the features asset's defaults "
                  f"reproduce a stored image (agreement {shown})\n")
    started = time.perf_counter()
    results = suggester.suggest(paths, args.user, k=args.k, groups=groups)
    seconds = time.perf_counter() - started
    per_image = seconds / max(len(results), 1)
    if args.json:
        json.dump({
            "dataset": args.dataset,
            "user": str(args.user),
            "user_known": user_known,
            "model": choice.name,
            "seed": args.seed,
            "reason": choice.reason,
            "note": choice.note,
            "groups": groups,
            "images": [r.as_dict() for r in results],
            "seconds": {"load": round(load_seconds, 4), "suggest": round(seconds, 4),
                        "per_image": round(per_image, 4)},
        }, out, indent=2)
        out.write("\n")
    else:
        out.write(f"model {choice.name} (seed {args.seed}; {choice.reason}), user {args.user}\n")
        for result in results:
            out.write(f"\n{result.path}\n")
            if result.error:
                out.write(f"  error: {result.error}\n")
                continue
            width = max(len(t) for t in result.tags)
            for rank, (tag, score) in enumerate(zip(result.tags, result.scores), start=1):
                out.write(f"  {rank:2d}. {tag:<{width}}  {score:.4f}\n")
    failed = [r for r in results if r.error]
    for result in failed:
        err.write(f"error: {result.path}: {result.error}\n")
    err.write(f"{len(results)} image(s) in {seconds:.3f} s ({per_image:.3f} s per image) after "
              f"{load_seconds:.2f} s loading\n")
    return EXIT_IMAGE_ERRORS if failed else EXIT_OK


def run_sql(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from tagrec_models.paths import DataHome
    from tagrec_models.sql_shell import SqlShellError, run

    home = DataHome(Path(args.home).resolve()) if args.home else DataHome.from_env()
    try:
        return run(home.duckdb_path, args.queries, sys.stdin, out, err, csv=args.csv, max_rows=args.max_rows)
    except SqlShellError as error:
        err.write(f"tagrec sql: error: {error}\n")
        return EXIT_BAD_INPUT


def raise_bad(message: str) -> None:
    from tagrec_models.suggest import SuggestError

    raise SuggestError(message)


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse printed its usage message already
        return int(exit_.code or 0)
    from tagrec_models.suggest import SuggestError

    try:
        if args.command == "suggest":
            return run_suggest(args, out, err)
        if args.command == "sql":
            return run_sql(args, out, err)
    except SuggestError as error:
        err.write(f"tagrec {args.command}: error: {error}\n")
        return EXIT_BAD_INPUT
    parser.error(f"unknown command {args.command!r}")
    return EXIT_BAD_INPUT


if __name__ == "__main__":
    raise SystemExit(main())

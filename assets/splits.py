"""Split assets: train / val / test as Parquet files and DuckDB views, with blocking checks."""


import dagster as dg
import duckdb
import pandas as pd

from assets.common import check_result, key, md_table, progress
from assets.datasets import DatasetSpec
from assets.ingest import SOURCE_SPLIT_TABLE
from assets.recipe_settings import RecipeSettings
from assets.resources import DUCKDB_POOL
from tagrec_models.preprocess.duplicates import apply_duplicate_grouping
from tagrec_models.preprocess.checks import check_disjoint_parts, check_heldout_seen_in_train
from tagrec_models.preprocess.relations import PreprocessInputError
from tagrec_models.preprocess.splits import PARTS, split_per_user, split_predefined

PART_DESCRIPTIONS = {
    "train": "Training assignments (user_id, photo_id, tag).",
    "val": "Validation assignments, carved from train; hyper-parameters are chosen here, never on test.",
    "test": "Test assignments: held-out posts whose users and tags all occur in train.",
}


def split_assets(spec: DatasetSpec) -> list[dg.AssetsDefinition]:
    train_key = key(spec, "train")
    ins = {"filtered_assignments": dg.AssetIn(key(spec, "filtered_assignments")),
           "images": dg.AssetIn(key(spec, "images"))}  # recipe.duplicate_grouping reads the files
    split_table = SOURCE_SPLIT_TABLE.get(spec.source)
    if split_table is not None:
        ins["standard_split"] = dg.AssetIn(key(spec, split_table))

    @dg.multi_asset(
        pool=DUCKDB_POOL,  # writes tagrec.duckdb (views over its Parquet files)
        name=f"{spec.name}__splits",
        outs={
            part: dg.AssetOut(
                key=key(spec, part),
                group_name=spec.name,
                kinds={"duckdb", "parquet"},
                description=(
                    f"{PART_DESCRIPTIONS[part]} Per-user leave-posts-out (paper 1, section 4.1) "
                    "or the source's predefined split, deterministic from the seed."
                ),
            )
            for part in PARTS
        },
        ins=ins,
        check_specs=[
            dg.AssetCheckSpec("disjoint_parts", asset=train_key, blocking=True,
                              description="No post (user, photo) is in two parts."),
            dg.AssetCheckSpec("heldout_seen_in_train", asset=train_key, blocking=True,
                              description="Every validation/test user and tag occurs in train."),
        ],
    )
    def splits(context: dg.AssetExecutionContext, config: RecipeSettings, **inputs: pd.DataFrame):
        recipe = config.recipe(spec)
        filtered = inputs["filtered_assignments"]
        con = duckdb.connect()
        try:
            if recipe.split == "predefined":
                if "standard_split" not in inputs:
                    raise dg.Failure(f"dataset {spec.name}: recipe {recipe.name!r} needs a predefined split, which this source lacks")
                standard = inputs["standard_split"]
                test_ids = standard.loc[standard["part"] == "test", "photo_id"].astype(str)
                result = split_predefined(
                    con, filtered, test_ids, recipe.val_fraction, recipe.seed,
                    log=progress(context), name=recipe.name,
                )
            else:
                result = split_per_user(con, filtered, recipe, log=progress(context))
        except PreprocessInputError as error:
            raise dg.Failure(f"dataset {spec.name}: {error}") from error
        finally:
            con.close()
        result = apply_duplicate_grouping(result, inputs["images"], recipe, log=progress(context))
        for part in PARTS:
            frame = result.part(part)
            metadata = {
                "posts": int(frame[["user_id", "photo_id"]].drop_duplicates().shape[0]),
                "photos": int(frame["photo_id"].nunique()),
                "tags": int(frame["tag"].nunique()),
            }
            if part == "train":
                metadata.update({
                    "parts": md_table(result.stats),
                    "notes": "\n".join(result.notes) or "none",
                    "moved_to_train": result.moved_to_train,
                    "dropped_heldout_assignments": result.dropped_assignments,
                })
            yield dg.Output(frame, output_name=part, metadata=metadata)
        yield check_result(train_key, "disjoint_parts", check_disjoint_parts(result.parts))
        yield check_result(train_key, "heldout_seen_in_train", check_heldout_seen_in_train(result.parts))

    return [splits]

"""Preprocessing assets: paper 1's rules in DuckDB SQL, with blocking asset checks.

The filtered assignments never pass through pandas here: DuckDB writes them to a Parquet file
in the data home (``preprocess(..., output=)``), the checks read that file, and the IO manager
publishes it (``ParquetTable``). On 100M assignments (``benchmarks/scale_benchmark.py
preprocess``, recipe ``full10``) the step's preprocessing peaked at 17.2 GiB with the result as a
DataFrame and DuckDB unbounded, and at 12.5 GiB this way (memory limit 11.7 GiB).
"""


import dagster as dg
import pandas as pd
from pydantic import Field

from assets.common import check_result, key, md_table, progress
from assets.datasets import DatasetSpec
from assets.io_manager import ParquetTable
from assets.recipe_settings import RecipeSettings
from assets.resources import DUCKDB_POOL, DataHomeResource
from tagrec_models.preprocess.checks import check_core, check_nonempty
from tagrec_models.preprocess.filtering import PreprocessError, preprocess
from tagrec_models.preprocess.relations import PreprocessInputError, connect


class PreprocessSettings(RecipeSettings):
    duckdb_memory_limit: str = Field(
        default="",
        description="What DuckDB may hold while preprocessing before it spills to the data home's "
        "duckdb_tmp folder (DuckDB syntax, e.g. '12GB'); empty: half the machine's memory.",
    )


def preprocess_assets(spec: DatasetSpec) -> list[dg.AssetsDefinition]:
    filtered_key = key(spec, "filtered_assignments")

    @dg.multi_asset(
        pool=DUCKDB_POOL,  # writes tagrec.duckdb (views over its Parquet files)
        name=f"{spec.name}__preprocess",
        outs={
            "filtered_assignments": dg.AssetOut(
                key=filtered_key,
                group_name=spec.name,
                kinds={"duckdb", "parquet"},
                description=(
                    "Assignments after paper 1's preprocessing (section 4.1), in DuckDB SQL: "
                    "optional WordNet mapping, top-N tags, seeded user sample, the 50% tag-share "
                    "rule, then the p-core of users and tags iterated to a fixed point; core "
                    f"sizes scaled down where the source is too small (said in metadata). {spec.name}: "
                    f"recipe '{spec.recipe}'."
                ),
            ),
            "preprocess_stats": dg.AssetOut(
                key=key(spec, "preprocess_stats"),
                group_name=spec.name,
                kinds={"pandas"},
                description="Users, photos, posts, tags and assignments after each preprocessing step.",
            ),
        },
        ins={
            "assignments": dg.AssetIn(key(spec, "assignments")),
            "tag_mapping": dg.AssetIn(key(spec, "tag_mapping")),
        },
        check_specs=[
            dg.AssetCheckSpec("core_property", asset=filtered_key, blocking=True,
                              description="Every user has >= k_users posts and every tag is in >= k_tags posts."),
            dg.AssetCheckSpec("nonempty", asset=filtered_key, blocking=True,
                              description="Something is left after filtering."),
        ],
    )
    def preprocess_asset(
        context: dg.AssetExecutionContext,
        config: PreprocessSettings,
        data_home: DataHomeResource,
        assignments: pd.DataFrame,
        tag_mapping: pd.DataFrame,
    ):
        recipe = config.recipe(spec)
        mapping = tag_mapping.dropna(subset=["tag"]).drop_duplicates("tag")[["tag", recipe.wordnet_column]]
        # Written in the data home (moved into place by the IO manager: a rename).
        staging = data_home.home.dataset_dir(spec.name) / "staging" / "filtered_assignments.parquet"
        con = connect(config.duckdb_memory_limit or None, data_home.home.root / "duckdb_tmp")
        try:
            result = preprocess(con, assignments, recipe, log=progress(context), wordnet_mapping=mapping,
                                output=staging)
            k_users, k_tags = result.core
            core = check_core(result.parquet, k_users, k_tags, con=con)
            nonempty = check_nonempty(result.parquet, con=con)
        except (PreprocessError, PreprocessInputError) as error:
            raise dg.Failure(f"dataset {spec.name}: {error}") from error
        finally:
            con.close()
        final = result.stats.iloc[-1]  # the counts of the written rows
        yield dg.Output(
            ParquetTable(result.parquet),
            output_name="filtered_assignments",
            metadata={
                "users": int(final["users"]),
                "posts": int(final["posts"]),
                "tags": int(final["tags"]),
                "assignments": int(final["assignments"]),
                "core_users": k_users,
                "core_tags": k_tags,
                "notes": "\n".join(result.notes) or "none",
                "recipe": dg.MetadataValue.json(result.recipe.to_dict()),
                "steps": md_table(result.stats),
            },
        )
        yield dg.Output(result.stats, output_name="preprocess_stats")
        yield check_result(filtered_key, "core_property", core)
        yield check_result(filtered_key, "nonempty", nonempty)

    return [preprocess_asset]

"""Vocabulary assets: the WordNet mapping table and the tag assignments (DESIGN.md step 2)."""


import dagster as dg
import pandas as pd

from assets.common import key, progress
from assets.datasets import DatasetSpec
from assets.resources import DUCKDB_POOL, DataHomeResource
from tagrec_models.preprocess.assemble import assignments_from_ingest
from tagrec_models.vocabulary.wordnet import WordNetSetupError, map_tags


def vocabulary_assets(spec: DatasetSpec) -> list[dg.AssetsDefinition]:
    @dg.asset(
        pool=DUCKDB_POOL,  # writes tagrec.duckdb (views over its Parquet files)
        key=key(spec, "tag_mapping"),
        group_name=spec.name,
        ins={"photo_tags": dg.AssetIn(key(spec, "photo_tags"))},
        kinds={"pandas", "parquet"},
    )
    def tag_mapping(
        context: dg.AssetExecutionContext, photo_tags: pd.DataFrame, data_home: DataHomeResource
    ) -> pd.DataFrame:
        """Every raw tag with its cleaned form, WordNet 3.0 lemma and synset (nltk; nouns
        first, then verbs, adjectives, adverbs; first synset). A null synset means WordNet does
        not know the tag; the preprocessing recipe decides whether such tags are kept
        (``keep_unmapped``) when it maps tags to WordNet (paper 1, Flickr-PTR). WordNet is the
        machine-wide nltk install, made on first need: no data home needs a setup step."""
        try:
            frame = map_tags(photo_tags["raw_tag"].dropna(), data_home.nltk_data, log=progress(context))
        except WordNetSetupError as error:
            raise dg.Failure(str(error)) from error  # the message names the command that fixes it
        mapped = int(frame["synset"].notna().sum())
        context.add_output_metadata(
            {"raw_tags": len(frame), "mapped_to_wordnet": mapped, "unmapped": len(frame) - mapped}
        )
        return frame

    @dg.asset(
        pool=DUCKDB_POOL,  # writes tagrec.duckdb (views over its Parquet files)
        key=key(spec, "assignments"),
        group_name=spec.name,
        ins={
            "photos": dg.AssetIn(key(spec, "photos")),
            "photo_tags": dg.AssetIn(key(spec, "photo_tags")),
            "images": dg.AssetIn(key(spec, "images")),
        },
        kinds={"duckdb", "parquet"},
    )
    def assignments(
        photos: pd.DataFrame, photo_tags: pd.DataFrame, images: pd.DataFrame
    ) -> pd.DataFrame:
        """Tag assignments (user_id = the photo's owner, photo_id, cleaned tag), one row per
        distinct triple; photos whose image is broken are left out (every model needs pixels)."""
        return assignments_from_ingest(photos, photo_tags, images)

    return [tag_mapping, assignments]

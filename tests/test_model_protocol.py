"""Guards "a model is one file": every registered model declares what the pipeline needs on
its class (papers, inputs, search space, documented config), the registry imports only the
module asked for, and a new model module alone gets a model asset, a paper-table input and a
leaderboard input, with no other edit."""

import dataclasses
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from assets.model_config import config_values, settings_class
from tagrec_models.experiment import SIDE_SOURCES
from tagrec_models.papers import DatasetShape, check_declarations, paper_methods
from tagrec_models.recommenders.config_docs import field_descriptions, undocumented_fields
from tagrec_models.recommenders.registry import all_recommenders, get_recommender

ROOT = Path(__file__).resolve().parents[1]
MODELS = all_recommenders()


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_every_model_declares_what_the_pipeline_reads(model):
    check_declarations(model)
    assert set(model.needs) <= set(SIDE_SOURCES), f"{model.name} needs an input no asset provides"
    assert undocumented_fields(model.Config) == [], f"{model.name}: document these Config fields"
    for field, values in model.search_space.items():
        assert field in {f.name for f in dataclasses.fields(model.Config)}, (model.name, field)
        assert len(values) >= 1


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_launchpad_config_is_typed_and_described(model):
    settings = settings_class(model)
    params = settings.model_fields["params"].annotation
    fields = {f.name for f in dataclasses.fields(model.Config)} - {"seed"}
    assert set(params.model_fields) == fields
    for name, info in params.model_fields.items():
        assert info.description == field_descriptions(model.Config)[name]
    # The defaults round-trip to the model's own defaults (tuples included).
    defaults = config_values(model, params())
    assert model.Config(**defaults) == dataclasses.replace(model.Config(), seed=0)


def test_field_descriptions_read_all_three_documentation_styles():
    walk = get_recommender("ug_nw").Config  # definition lines in the class docstring
    assert field_descriptions(walk)["damping"].startswith("paper 2, eq. 6's d")
    permlp = get_recommender("ch_permlp").Config  # bullets
    assert "hidden layer" in field_descriptions(permlp)["hidden"]
    two_pknn = get_recommender("two_pknn").Config  # attribute docstrings
    assert field_descriptions(two_pknn)["k1"].startswith("Pass 1")


def test_papers_come_from_the_declarations():
    tables = paper_methods(DatasetShape(has_users=True, has_groups=True))
    assert tables["paper1"][0] == "cnn_permlp"  # the proposed model first
    assert tables["paper2"][0] == "ug_nw"
    assert tables["paper3"][0] == "dcca"
    assert "mp" in tables["paper1"] and "mp" in tables["paper3"]
    without_users = paper_methods(DatasetShape(has_users=False, has_groups=False))
    assert set(without_users) == {"paper3"}
    no_groups = paper_methods(DatasetShape(has_users=True, has_groups=False))
    assert not {"ug_nw", "ug_nonw", "personal_knn"} & set(no_groups["paper2"])


def test_registry_imports_only_the_module_asked_for():
    code = textwrap.dedent("""
        import sys
        from tagrec_models.recommenders.registry import available, get_recommender
        names = available()
        assert get_recommender("mp").name == "mp"
        models = [m for m in sys.modules if m.startswith("tagrec_models.recommenders.")]
        print(sorted(models), "torch" in sys.modules, len(names))
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.split("]")[0].count("most_popular") == 1
    assert "patch_cnn" not in out and "weighted_walk" not in out
    assert " False " in out  # no torch


THROWAWAY = '''"""A throwaway model written by tests/test_model_protocol.py (deleted after the test)."""

import numpy as np

from tagrec_models.recommenders.base import Recommender
from tagrec_models.recommenders.registry import register


@register
class Throwaway(Recommender):
    """Scores every tag by its training count."""

    name = "zz_throwaway"
    papers = PAPERS

    def _fit(self, data):
        self.counts = np.asarray(data.train.tags.sum(axis=0)).ravel()

    def _score(self, posts, side):
        return np.tile(self.counts, (posts.n_posts, 1))
'''


@pytest.mark.parametrize("papers", [{}, {"paper3": "beyond"}], ids=["no paper", "paper3"])
def test_a_new_model_file_is_all_it_takes(papers):
    path = ROOT / "tagrec_models" / "recommenders" / "zz_throwaway.py"
    path.write_text(THROWAWAY.replace("PAPERS", repr(papers)))
    code = textwrap.dedent("""
        import json
        import dagster as dg
        from pipelines.definitions import defs
        graph = defs.resolve_asset_graph()
        def ins(name):
            return sorted("/".join(k.path) for k in graph.get(dg.AssetKey(["corel5k", name])).parent_keys)
        print(json.dumps({"model": graph.has(dg.AssetKey(["corel5k", "model_zz_throwaway"])),
                          "leaderboard": ins("leaderboard"), "paper3": ins("paper3_results")}))
    """)
    try:
        result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    finally:
        path.unlink()
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["model"]
    assert "corel5k/model_zz_throwaway" in seen["leaderboard"]
    assert ("corel5k/model_zz_throwaway" in seen["paper3"]) == bool(papers)

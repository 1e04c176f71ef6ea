"""The demo's run config: quick epoch caps on every model, and a recipe preset when asked."""

from pipelines.definitions import defs
from pipelines.demo import QUICK_EPOCH_CAPS, run_config


def test_quick_profile_caps_epochs_and_keeps_three_seeds():
    ops = run_config(defs.resolve_job_def("openclipart_all"), "quick")["ops"]
    cnn_permlp = ops["openclipart__model_cnn_permlp"]["config"]
    assert cnn_permlp["seeds"] == [0, 1, 2]
    assert cnn_permlp["params"]["max_epochs"] == QUICK_EPOCH_CAPS["max_epochs"]
    assert "openclipart__preprocess" not in ops  # the dataset's own recipe


def test_recipe_preset_reaches_preprocessing_and_splits():
    ops = run_config(defs.resolve_job_def("openclipart_all"), "full", recipe="nuswide")["ops"]
    assert ops["openclipart__preprocess"] == {"config": {"profile": "nuswide"}}
    assert ops["openclipart__splits"] == {"config": {"profile": "nuswide"}}
    assert ops["openclipart__model_pitf"]["config"]["grid"] == "paper"

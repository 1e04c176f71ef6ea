"""The demo's run config: the same tuning budget for every model, quick epoch caps, and a recipe
preset when asked."""

from pipelines.definitions import defs
from pipelines.demo import FULL_TRIALS, QUICK_EPOCH_CAPS, QUICK_RETUNES, QUICK_TRIALS, run_config


def test_quick_profile_caps_epochs_and_keeps_three_seeds():
    ops = run_config(defs.resolve_job_def("openclipart_all"), "quick")["ops"]
    cnn_permlp = ops["openclipart__model_cnn_permlp"]["config"]
    assert cnn_permlp["seeds"] == [0, 1, 2]
    # The same trial budget for every model of the profile.
    budgets = {(o["config"]["n_trials"], o["config"]["retune_trials"]) for n, o in ops.items() if "__model_" in n}
    assert budgets == {(QUICK_TRIALS, QUICK_RETUNES)}
    assert cnn_permlp["params"]["max_epochs"] == QUICK_EPOCH_CAPS["max_epochs"]
    assert "openclipart__preprocess" not in ops  # the dataset's own recipe


def test_recipe_preset_reaches_preprocessing_and_splits():
    ops = run_config(defs.resolve_job_def("openclipart_all"), "full", recipe="nuswide")["ops"]
    assert ops["openclipart__preprocess"] == {"config": {"profile": "nuswide"}}
    assert ops["openclipart__splits"] == {"config": {"profile": "nuswide"}}
    assert ops["openclipart__model_pitf"]["config"]["n_trials"] == FULL_TRIALS


def test_repeated_splits_are_one_in_the_quick_profile_and_five_in_the_full():
    """Issue 12: `make demo` fits nothing extra (R = 1); the full profile compares 5 splits with
    the profile's budget, and the recipe preset reaches the re-splits too."""
    quick = run_config(defs.resolve_job_def("openclipart_all"), "quick")["ops"]["openclipart__repeated_splits"]
    assert quick["config"]["n_splits"] == 1
    full = run_config(defs.resolve_job_def("openclipart_all"), "full", recipe="nuswide")["ops"]
    config = full["openclipart__repeated_splits"]["config"]
    assert config["n_splits"] == 5 and config["n_trials"] == FULL_TRIALS and config["profile"] == "nuswide"
    assert "corel5k__repeated_splits" not in run_config(defs.resolve_job_def("corel5k_all"), "quick")["ops"]


def test_the_full_profile_searches_every_models_scoring_grid_exhaustively():
    """The README's claim: in the full profile every operating point is the best of its whole
    scoring grid (the engine is exhaustive over a grid of at most ``retune_trials`` points)."""
    from pipelines.demo import FULL_RETUNES
    from tagrec_models.recommenders.registry import all_recommenders
    from tagrec_models.studies.tuning import grid_size

    largest = max(grid_size({n: v for n, v in m.search_space.items() if n in m.scoring_fields})
                  for m in all_recommenders())
    assert FULL_RETUNES >= largest


def test_the_thresholds_rule_searches_with_the_profiles_budget():
    """Corel5k's thresholds table searches the scoring fields with the same budget as the
    models' operating points: exhaustive over every registered grid in the full profile."""
    from pipelines.demo import FULL_RETUNES

    for profile, budget in (("quick", QUICK_RETUNES), ("full", FULL_RETUNES)):
        ops = run_config(defs.resolve_job_def("corel5k_all"), profile)["ops"]
        assert ops["corel5k__label_thresholds"]["config"]["retune_trials"] == budget

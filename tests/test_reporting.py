"""Table helpers of tagrec_models.reporting on frames worked out by hand."""

import pandas as pd

from tagrec_models.reporting import distinct_scenarios


def frame(new_f1: float) -> pd.DataFrame:
    return pd.DataFrame({
        "method": ["mp", "pitf", "mp", "pitf"],
        "scenario": ["all", "all", "new_images", "new_images"],
        "f1@5": [0.1, 0.2, 0.1, new_f1],
    })


def test_a_scenario_repeating_all_is_dropped():
    shown, dropped = distinct_scenarios(frame(new_f1=0.2))
    assert dropped == ["new_images"]
    assert list(shown["scenario"]) == ["all", "all"]


def test_a_scenario_that_differs_is_kept():
    shown, dropped = distinct_scenarios(frame(new_f1=0.25))
    assert dropped == []
    assert len(shown) == 4


def test_a_table_without_scenarios_is_unchanged():
    table = pd.DataFrame({"method": ["mp"], "f1@5": [0.1]})
    shown, dropped = distinct_scenarios(table)
    assert dropped == [] and shown.equals(table)


def test_the_representation_column_spells_out_the_cnn_settings():
    from tagrec_models.features.extraction import ExtractionConfig
    from tagrec_models.reporting import representation, with_representations

    settings = ExtractionConfig(backbone="efficientnet_lite2", flip=True, embedding_stages=("stage6",))
    # cnn is the pooled embedding whatever embedding_stages says; cnn_stages appends them
    assert representation(("cnn",), settings) == "efficientnet_lite2 260px pooled flip-averaged"
    assert representation(("cnn_stages",), settings) == "efficientnet_lite2 260px pooled flip-averaged +stage6 mean"
    assert representation(("cnn_stages",), None) == "cnn_stages"
    assert representation(("cnn",), ExtractionConfig()) == "efficientnet_lite0 224px pooled"
    assert representation(("ch64", "cm225"), None) == "CH-64 colour histogram + CM-225 colour moments"
    assert representation((), settings) == "tags only (no image features)"
    table = with_representations(pd.DataFrame({"method": ["mp", "asl_probe"]}), None)
    assert table["representation"].tolist() == ["tags only (no image features)", "cnn"]

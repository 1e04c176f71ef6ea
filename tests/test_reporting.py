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

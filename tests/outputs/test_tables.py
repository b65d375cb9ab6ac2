"""Markdown tables: what a missing value, a bool and a float look like, and how columns align."""

from __future__ import annotations

import pytest

from survey_cracks.outputs.tables import MISSING, format_cell, markdown_table


def test_numeric_columns_align_right_and_missing_values_show_a_dash():
    table = markdown_table(["engine", "ONNX MB", "F1"], [["torch fp32", None, 0.9076], ["onnxruntime int8", 11.4, 0.9079]])
    assert table.splitlines() == [
        "| engine | ONNX MB | F1 |",
        "|:---|---:|---:|",
        f"| torch fp32 | {MISSING} | 0.9076 |",
        "| onnxruntime int8 | 11.4 | 0.9079 |",
    ]


def test_given_alignment_wins_and_a_column_of_text_or_only_missing_values_is_left_aligned():
    assert markdown_table(["a", "b"], [[1, "x"]], align="cr").splitlines()[1] == "|:---:|---:|"
    assert markdown_table(["a", "b", "c"], [[None, "2", True]]).splitlines()[1] == "|:---|:---|:---|"
    assert markdown_table(["a", "b"], []).splitlines() == ["| a | b |", "|:---|:---|"]


def test_cells_keep_the_table_intact():
    assert format_cell(True) == "yes" and format_cell(False) == "no"
    assert format_cell(2.3e-06) == "2.3e-06" and format_cell(137.0) == "137.0" and format_cell(7) == "7"
    assert format_cell("a | b\nc") == "a \\| b c"


def test_a_row_of_the_wrong_length_or_a_bad_alignment_is_refused():
    with pytest.raises(ValueError, match="row 2 has 1 values for 2 columns"):
        markdown_table(["a", "b"], [[1, 2], [3]])
    with pytest.raises(ValueError, match="one of l, r, c per column"):
        markdown_table(["a", "b"], [[1, 2]], align="rx")


def test_every_public_function_of_the_module_is_exported():
    """`from survey_cracks.outputs.tables import *` and the API docs list what ``__all__`` lists: a public
    function left out of it (model_comparison_tables was) is one the reader never finds."""
    import inspect

    from survey_cracks.outputs import tables

    public = {name for name, value in vars(tables).items()
              if inspect.isfunction(value) and value.__module__ == tables.__name__ and not name.startswith("_")}
    assert public <= set(tables.__all__), sorted(public - set(tables.__all__))

"""Suites as code: parameters are checked, rules are distinct, importing costs no GX."""

from __future__ import annotations

import subprocess
import sys

import pytest

from data_contracts.shard_stats import shard_row_stats
from data_contracts.suites import SUITES, get_suite, rules_for
from tests.data_contracts.conftest import SEP, SHARD, shard_frame


def test_unknown_suite_names_the_known_ones():
    with pytest.raises(KeyError, match="known suites: examples, examples_cross_split, mrpc_"):
        get_suite("mrpc_validation")


def test_missing_and_misspelled_parameters_are_named():
    with pytest.raises(TypeError, match=r"missing \['max_rows'\], unknown \['max_row'\]"):
        rules_for("mrpc_train", min_rows=1, max_row=9)


def test_parameters_fill_the_expectations_and_their_sentences():
    suite = get_suite("shards", **SHARD, expected_rows=6, labeled=False, classified=False, seps=2,
                      single=False)
    by_column = {e.column: e for e in suite.expectations if hasattr(e, "column")}
    assert by_column["n_ids"].value_set == [SHARD["max_seq_length"]]
    assert by_column["max_id"].max_value == SHARD["vocab_size"] and by_column["max_id"].strict_max
    assert "label" not in by_column  # unlabeled: no label rules
    assert suite.expectations[-1].description == "exactly 6 rows"


@pytest.mark.parametrize("name", sorted(SUITES))
def test_rule_sentences_are_distinct(name):
    """Reports keep suite order by matching each result's description to its rule."""
    descriptions = [rule.description for rule in SUITES[name]]
    assert len(set(descriptions)) == len(descriptions)


def test_shard_rules_use_only_columns_that_shard_row_stats_makes():
    columns = {rule.kwargs["column"] for rule in SUITES["shards"] if "column" in rule.kwargs}
    assert columns <= set(shard_row_stats(shard_frame(), sep_id=SEP).columns)


def test_importing_data_contracts_loads_no_gx_prefect_or_mlflow():
    heavy = ("great_expectations", "prefect", "mlflow")
    code = ("import sys, data_contracts.validate, data_contracts.suites; "
            f"print(sorted(m for m in {heavy!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

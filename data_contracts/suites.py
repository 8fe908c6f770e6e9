"""The data contracts, as Great Expectations suites written in Python.

`SUITES` maps a suite name to its rules. A rule is one GX expectation with a sentence saying what
must hold; `Param("x")` marks a value that `get_suite(name, x=...)` fills in, and a rule with
`when="labeled"` applies only when that parameter is true.

    >>> suite = get_suite("mrpc_train", min_rows=1, max_rows=5000)
    >>> [e.description for e in suite.expectations][1:3]
    ['Quality is 0 or 1', '#1 ID is a positive integer']
    >>> suite.expectations[-1].description, suite.expectations[-1].max_value
    ('between 1 and 5000 rows', 5000)

Shard rules are stated on per-row columns that `shard_stats.shard_row_stats` computes
(`n_ids`, `first_id`, `n_sep`, ...), because GX expectations cannot look inside a list cell.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from data_contracts.context import import_gx

TRAIN_COLUMNS = ("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String")
TEST_COLUMNS = ("index", "#1 ID", "#2 ID", "#1 String", "#2 String")
ID_COLUMNS = ("#1 ID", "#2 ID")
PAIR_IN_TRAIN = "pair in train"  # derived: is this row's (#1 ID, #2 ID) pair also in train.tsv?

POSITIVE_INT = r"^[1-9][0-9]*$"
NON_NEGATIVE_INT = r"^(?:0|[1-9][0-9]*)$"
NOT_BLANK = r"\S"


@dataclass(frozen=True)
class Param:
    """A value of a rule left open until `get_suite` is called with `name=value`."""

    name: str


@dataclass(frozen=True)
class Rule:
    """One expectation: what must hold in words (may name params: "{min_rows}"), and its GX form."""

    description: str
    expectation: str  # a class in great_expectations.expectations
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    when: str | None = None  # a boolean parameter: the rule applies only when it is true


def _columns_rule(columns: tuple[str, ...]) -> Rule:
    return Rule(f"columns are exactly {', '.join(columns)}, in this order",
                "ExpectTableColumnsToMatchOrderedList", {"column_list": list(columns)})


def _regex_rule(column: str, regex: str, what: str) -> Rule:
    return Rule(f"{column} is {what}", "ExpectColumnValuesToMatchRegex",
                {"column": column, "regex": regex})


# Rules every GLUE MRPC split shares, after its first two columns.
_PAIR_RULES = [
    _regex_rule("#1 ID", POSITIVE_INT, "a positive integer"),
    _regex_rule("#2 ID", POSITIVE_INT, "a positive integer"),
    _regex_rule("#1 String", NOT_BLANK, "not blank"),
    _regex_rule("#2 String", NOT_BLANK, "not blank"),
    Rule("no (#1 ID, #2 ID) pair appears twice", "ExpectCompoundColumnsToBeUnique",
         {"column_list": list(ID_COLUMNS)}),
    Rule("between {min_rows} and {max_rows} rows", "ExpectTableRowCountToBeBetween",
         {"min_value": Param("min_rows"), "max_value": Param("max_rows")}),
]

_MRPC_LABELED = [
    _columns_rule(TRAIN_COLUMNS),
    Rule("Quality is 0 or 1", "ExpectColumnValuesToBeInSet",
         {"column": "Quality", "value_set": ["0", "1"]}),
    *_PAIR_RULES,
]


def _in_set(column: str, value: Any, description: str, when: str | None = None) -> Rule:
    return Rule(description, "ExpectColumnValuesToBeInSet",
                {"column": column, "value_set": [value]}, when)


_SHARD_RULES = [
    _in_set("n_ids", Param("max_seq_length"), "every row has {max_seq_length} input_ids"),
    _in_set("n_mask", Param("max_seq_length"), "input_mask has as many entries as input_ids"),
    _in_set("n_segments", Param("max_seq_length"), "segment_ids has as many entries as input_ids"),
    _in_set("first_id", Param("cls_id"), "every row starts with [CLS] (id {cls_id})"),
    _in_set("n_sep", Param("seps"), "every row holds exactly {seps} [SEP] (id {sep_id}), one "
                                    "per sentence"),
    _in_set("mask_is_prefix", True, "input_mask is ones then zeros, starting with a one"),
    _in_set("segments_valid", True, "segment_ids are 0 or 1, and 0 wherever input_mask is 0"),
    _in_set("max_segment", 0, "segment_ids are all 0 (one sentence per example)", "single"),
    Rule("no id is negative", "ExpectColumnValuesToBeBetween",
         {"column": "min_id", "min_value": 0}),
    Rule("every id is below vocab_size {vocab_size}", "ExpectColumnValuesToBeBetween",
         {"column": "max_id", "max_value": Param("vocab_size"), "strict_max": True}),
    Rule("every row has a label", "ExpectColumnValuesToNotBeNull", {"column": "label"},
         when="labeled"),
    Rule("label is one of {label_set}", "ExpectColumnValuesToBeInSet",
         {"column": "label", "value_set": Param("label_set")}, when="classified"),
    Rule("exactly {expected_rows} rows", "ExpectTableRowCountToEqual",
         {"value": Param("expected_rows")}),
]

# Stated on a task's examples frame (data_contracts/specs), plus the derived columns REPEAT
# (the texts, where an earlier row holds the same; else null) and IN_TRAIN (the texts, where
# train holds the same; else null).
REPEAT, IN_TRAIN = "repeats an earlier example", "also in train"
_EXAMPLE_RULES = [
    _regex_rule("text_a", NOT_BLANK, "not blank"),
    Rule("text_b is not blank", "ExpectColumnValuesToMatchRegex",
         {"column": "text_b", "regex": NOT_BLANK}, when="pair"),
    Rule("every example has a label", "ExpectColumnValuesToNotBeNull", {"column": "label"},
         when="labeled"),
    Rule("label is one of {label_set}", "ExpectColumnValuesToBeInSet",
         {"column": "label", "value_set": Param("label_set")}, when="classified"),
    Rule("label is a number from {low} to {high}", "ExpectColumnValuesToBeBetween",
         {"column": "label", "min_value": Param("low"), "max_value": Param("high")},
         when="scored"),
    Rule("at most {duplicate_share:.1%} of examples repeat an earlier one",
         "ExpectColumnValuesToBeNull", {"column": REPEAT, "mostly": Param("unique_share")}),
    Rule("between {min_rows} and {max_rows} rows", "ExpectTableRowCountToBeBetween",
         {"min_value": Param("min_rows"), "max_value": Param("max_rows")}),
]

SUITES: dict[str, list[Rule]] = {
    "mrpc_train": _MRPC_LABELED,
    "mrpc_dev": _MRPC_LABELED,
    "mrpc_test": [
        _columns_rule(TEST_COLUMNS),
        _regex_rule("index", NON_NEGATIVE_INT, "a non-negative integer"),
        *_PAIR_RULES,
    ],
    # Stated on a dev (or test) frame with the derived column PAIR_IN_TRAIN added.
    "mrpc_cross_split": [
        _in_set(PAIR_IN_TRAIN, False, "no (#1 ID, #2 ID) pair is also in train"),
    ],
    "shards": _SHARD_RULES,
    "examples": _EXAMPLE_RULES,
    "examples_cross_split": [
        Rule("at most {overlap_share:.1%} of examples are also in train",
             "ExpectColumnValuesToBeNull", {"column": IN_TRAIN, "mostly": Param("distinct_share")}),
    ],
}


def _resolve(value: Any, params: Mapping[str, Any]) -> Any:
    """`value` with every Param replaced by its parameter; tuples and sets become lists for GX.

    >>> _resolve({"value_set": [Param("a"), 2]}, {"a": 1})
    {'value_set': [1, 2]}
    """
    if isinstance(value, Param):
        value = params[value.name]
        if isinstance(value, (set, frozenset)):
            return sorted(value)
        return list(value) if isinstance(value, tuple) else value
    if isinstance(value, Mapping):
        return {key: _resolve(item, params) for key, item in value.items()}
    if isinstance(value, list):
        return [_resolve(item, params) for item in value]
    return value


def _parameters(rule: Rule) -> set[str]:
    """The parameter names a rule uses: its Params, `when`, and the fields of its description."""
    names = {name for _, name, _, _ in string.Formatter().parse(rule.description) if name}
    stack: list[Any] = [rule.kwargs]
    while stack:
        value = stack.pop()
        if isinstance(value, Param):
            names.add(value.name)
        elif isinstance(value, Mapping):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return names | ({rule.when} if rule.when else set())


def rules_for(name: str, **params: Any) -> list[Rule]:
    """The rules of suite `name` that apply under `params`; unknown or missing params raise."""
    if name not in SUITES:
        raise KeyError(f"unknown suite {name!r}; known suites: {', '.join(sorted(SUITES))}")
    rules = SUITES[name]
    needed = set().union(*(_parameters(rule) for rule in rules))
    missing, unknown = needed - params.keys(), params.keys() - needed
    if missing or unknown:
        raise TypeError(f"suite {name!r} takes parameters {sorted(needed)}; "
                        f"missing {sorted(missing)}, unknown {sorted(unknown)}")
    return [rule for rule in rules if rule.when is None or params[rule.when]]


def get_suite(name: str, **params: Any) -> Any:
    """Suite `name` as a `great_expectations.ExpectationSuite`, its Params filled from `params`.

    Each expectation carries its rule's sentence as its `description`.
    """
    gx = import_gx()
    expectations = [
        getattr(gx.expectations, rule.expectation)(
            **_resolve(rule.kwargs, params), description=rule.description.format(**params))
        for rule in rules_for(name, **params)
    ]
    return gx.ExpectationSuite(name=name, expectations=expectations)

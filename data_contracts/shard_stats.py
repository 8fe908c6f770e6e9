"""Per-row facts about tokenized shards, computed with numpy so GX can state rules on them.

A shard row holds three lists (`input_ids`, `input_mask`, `segment_ids`); a GX expectation sees a
list cell as one opaque value. `shard_row_stats` turns each row into scalars:

    column          meaning                                             in a good row
    n_ids           len(input_ids)                                      max_seq_length
    n_mask          len(input_mask)                                     max_seq_length
    n_segments      len(segment_ids)                                    max_seq_length
    first_id        input_ids[0] (-1 for an empty row)                  cls_id
    n_sep           how many ids equal sep_id                           2
    mask_is_prefix  input_mask is 1...1 0...0 with at least one 1       True
    segments_valid  segment ids are 0/1, and 0 wherever the mask is 0   True
    max_segment     the largest segment id (0 for an empty row)         1 for pairs, 0 else
    min_id, max_id  the smallest and largest id (0 for an empty row)    within [0, vocab_size)
    label           copied when the frame has one

    >>> frame = pd.DataFrame({"input_ids": [[101, 7, 102, 8, 102, 0]],
    ...                       "input_mask": [[1, 1, 1, 1, 1, 0]],
    ...                       "segment_ids": [[0, 0, 0, 1, 1, 0]]})
    >>> shard_row_stats(frame, sep_id=102).iloc[0].to_dict()  # doctest: +NORMALIZE_WHITESPACE
    {'n_ids': 6, 'n_mask': 6, 'n_segments': 6, 'first_id': 101, 'n_sep': 2,
     'mask_is_prefix': True, 'segments_valid': True, 'max_segment': 1, 'min_id': 0,
     'max_id': 102}
"""

from __future__ import annotations

import numpy as np
import pandas as pd

LIST_COLUMNS = ("input_ids", "input_mask", "segment_ids")
BIG = np.iinfo(np.int64)  # the fill that never wins a min (max) over a row's real ids


def as_arrays(column: pd.Series) -> list[np.ndarray]:
    """Each list cell as a flat int64 array; a null cell counts as an empty list."""
    return [np.asarray(cell, dtype=np.int64).ravel() if pd.api.types.is_list_like(cell)
            else np.empty(0, np.int64) for cell in column]


def padded(rows: list[np.ndarray], width: int) -> np.ndarray:
    """Ragged rows as one (len(rows), width) matrix, each left-aligned and zero-filled past its end.

    >>> padded([np.array([1, 2]), np.array([3]), np.array([], np.int64)], 3).tolist()
    [[1, 2, 0], [3, 0, 0], [0, 0, 0]]
    """
    lengths = np.array([len(row) for row in rows], dtype=np.int64)
    matrix = np.zeros((len(rows), width), dtype=np.int64)
    matrix[np.arange(width) < lengths[:, None]] = np.concatenate([np.empty(0, np.int64), *rows])
    return matrix


def mask_is_prefix(mask: np.ndarray) -> np.ndarray:
    """Rows of `mask` that are ones then zeros, with at least one 1.

    >>> mask_is_prefix(np.array([[1, 1, 0], [1, 0, 1], [0, 0, 0], [2, 0, 0]])).tolist()
    [True, False, False, False]
    """
    binary = np.isin(mask, (0, 1)).all(axis=1)
    never_rises = (np.diff(mask, axis=1) <= 0).all(axis=1)
    return binary & never_rises & (mask[:, 0] == 1)


def segments_valid(segments: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Rows whose segment ids are all 0 or 1, and 0 wherever the mask is 0 (on padding).

    >>> segments_valid(np.array([[0, 1, 0], [0, 1, 1], [0, 2, 0]]),
    ...                np.array([[1, 1, 0], [1, 1, 0], [1, 1, 0]])).tolist()
    [True, False, False]
    """
    binary = np.isin(segments, (0, 1)).all(axis=1)
    padding_is_zero = ~((mask == 0) & (segments != 0)).any(axis=1)
    return binary & padding_is_zero


def shard_row_stats(frame: pd.DataFrame, *, sep_id: int) -> pd.DataFrame:
    """One row of scalar facts per shard row (see the module docstring), indexed 0..n-1."""
    rows = {name: as_arrays(frame[name]) for name in LIST_COLUMNS}
    lengths = {name: np.array([len(row) for row in rows[name]], dtype=np.int64)
               for name in LIST_COLUMNS}
    width = max(1, *(int(n.max(initial=0)) for n in lengths.values()))
    ids, mask, segments = (padded(rows[name], width) for name in LIST_COLUMNS)  # (rows, width)
    n_ids = lengths["input_ids"]
    inside = np.arange(width) < n_ids[:, None]  # real ids, not the zero fill
    has_ids = n_ids > 0
    stats = {
        "n_ids": n_ids,
        "n_mask": lengths["input_mask"],
        "n_segments": lengths["segment_ids"],
        "first_id": np.where(has_ids, ids[:, 0], -1),
        "n_sep": ((ids == sep_id) & inside).sum(axis=1),
        "mask_is_prefix": mask_is_prefix(mask),
        "segments_valid": segments_valid(segments, mask),
        "max_segment": segments.max(axis=1, initial=0),
        "min_id": np.where(has_ids, np.where(inside, ids, BIG.max).min(axis=1), 0),
        "max_id": np.where(has_ids, np.where(inside, ids, BIG.min).max(axis=1), 0),
    }
    if "label" in frame.columns:
        stats["label"] = frame["label"].array  # keeps a nullable dtype; no index alignment
    return pd.DataFrame(stats)

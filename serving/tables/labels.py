"""Labelled tables: numeric feature columns plus one label column that says which rows are normal.

`vae train --label-column` and `vae evaluate` both read their files here. A row is normal when
its label equals `--normal-value` (compared as a number in a numeric column, as text in a text
column); every other row is anomalous.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serving.core.rows import InputError
from serving.tables.columns import arrow_to_rows, finite_rows, first_null, match_columns
from serving.tables.read import existing_table, open_npy, read_arrow

DEFAULT_NORMAL_VALUE = "0"  # the usual convention: 0 = normal, 1 = anomaly


@dataclass
class LabelledTable:
    x: np.ndarray  # (N, F) float32, the feature columns
    feature_names: list[str] | None  # None for .npy
    labels: np.ndarray  # (N,) the label column as read (numbers or text)
    anomalous: np.ndarray  # (N,) bool: label != normal value


def read_labelled(path: str | os.PathLike, label_column: str, normal_value: str | None = None,
                  feature_names: list[str] | None = None,
                  allow_missing: bool = False, schema=None) -> LabelledTable:
    """Features and labels of a whole file. For .npy, `label_column` is the column's index.

    With `feature_names`, those columns are the features (in that order); otherwise every
    column but the label column is. There must be at least one normal row.
    """
    path, suffix = existing_table(path)
    normal_value = DEFAULT_NORMAL_VALUE if normal_value is None else normal_value
    if suffix == ".npy":
        x, labels = _split_npy(path, label_column, allow_missing or schema is not None)
        return LabelledTable(x, None, labels,
                             ~normal_rows(labels, normal_value, label_column, path))
    features, labels, anomalous = split_labels(read_arrow(path, suffix), label_column,
                                               normal_value, path)
    if schema is not None:  # a bundle's column schema (serving.core.schema)
        match_columns(features.column_names, schema.names, str(path))
        return LabelledTable(schema.from_arrow(features, str(path)), schema.names, labels,
                             anomalous)
    if feature_names is not None:
        features = features.select(match_columns(features.column_names, feature_names,
                                                 str(path)))
    x, names = arrow_to_rows(features, str(path)), list(features.column_names)
    return LabelledTable(x, names, labels, anomalous)


def split_labels(table, label_column: str, normal_value: str,
                 path: Path) -> tuple[object, np.ndarray, np.ndarray]:
    """(the other columns, the label column's values, which rows are anomalous) of a pyarrow
    table; the label column must be there, in every row, and label some row normal."""
    if label_column not in table.column_names:
        raise InputError(f"{path} has no column {label_column!r}; expected --label-column to "
                         f"be one of {_shown(table.column_names)}")
    column = table.column(label_column)
    if column.null_count:
        raise InputError(f"{path}: label column {label_column!r} is empty at row "
                         f"{first_null(column)}; expected a label in every row")
    labels = column.to_numpy(zero_copy_only=False)
    anomalous = ~normal_rows(labels, normal_value, label_column, path)
    return table.drop_columns([label_column]), labels, anomalous


def _split_npy(path: Path, label_column: str,
               allow_missing: bool = False) -> tuple[np.ndarray, np.ndarray]:
    array = open_npy(path)
    if not label_column.isdigit() or int(label_column) >= array.shape[1]:
        raise InputError(f"{path} is a .npy array with {array.shape[1]} columns and no names; "
                         f"expected --label-column to be a column index from 0 to "
                         f"{array.shape[1] - 1}")
    index = int(label_column)
    data = np.asarray(array, dtype=np.float32)
    x = np.delete(data, index, axis=1)
    if not allow_missing:
        x = finite_rows(x, str(path))
    return x, np.asarray(array[:, index])


def normal_rows(labels: np.ndarray, value: str, label_column: str, path: Path) -> np.ndarray:
    """Which labels equal the --normal-value text; there must be at least one."""
    normal = _equals(labels, value, label_column, path)
    if not normal.any():
        values = ", ".join(repr(v) for v in np.unique(labels.astype(str))[:5].tolist())
        raise InputError(f"{path}: no row of label column {label_column!r} equals {value!r} "
                         f"(values: {values}); expected --normal-value to be the label of the "
                         f"normal rows")
    return normal


def _equals(labels: np.ndarray, value: str, label_column: str, path: Path) -> np.ndarray:
    """Which labels equal the --normal-value text, compared as the column's own type."""
    if labels.dtype.kind in "biuf":
        if labels.dtype.kind == "b":
            if value.lower() not in ("true", "false", "1", "0"):
                raise InputError(f"--normal-value {value!r} is not true/false, but label column "
                                 f"{label_column!r} of {path} is boolean")
            return labels == (value.lower() in ("true", "1"))
        try:
            number = float(value)
        except ValueError:
            raise InputError(f"--normal-value {value!r} is not a number, but label column "
                             f"{label_column!r} of {path} is numeric; expected a number such "
                             f"as 0") from None
        return labels == number
    return labels.astype(str) == value


def _shown(names: list[str]) -> str:
    return ", ".join(repr(n) for n in names[:8]) + (", ..." if len(names) > 8 else "")

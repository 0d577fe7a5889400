"""What each column of a training table is: numeric, categorical or ignored (`vae train`).

The rules, in order (a flag --numeric, --categorical or --ignore COL overrides them):
- a name that says label (label, target, class, y, anomaly, outlier, fraud, is_*, *_label):
  ignored and named, with how to use it (--label-column) or keep it;
- timestamps and dates, columns with no value, columns with one value: ignored;
- text with a distinct value in most rows (an identifier or free text), and integers named like
  an identifier (id, *_id, *Id) with a distinct value in most rows: ignored;
- other text, booleans, and numbers with at most CATEGORICAL_LEVELS distinct integral values:
  categorical;
- other numbers: numeric.
A categorical column keeps its levels seen in at least RARE rows (at most MAX_LEVELS - 1 of
them, the most frequent); the rest are pooled into OTHER. A two-level column whose rarer level
is in under 10% of rows is kept, but named as a possible label.
"""

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from serving.core.rows import InputError
from serving.core.schema import MAX_LEVELS, OTHER, Column, Schema, level_key

CATEGORICAL_LEVELS = 10  # numbers with at most this many distinct integral values
RARE = 5  # rows a level needs to be kept (and 0.1% of the rows, if more)
UNIQUE = 0.5  # share of distinct values above which text is an identifier
LABEL_NAME = re.compile(r"(label|labels|target|class|y|anomaly|anomalous|outlier|fraud|"
                        r"is_.*|.*_label|.*_target)", re.IGNORECASE)
ID_NAME = re.compile(r"(id|.*_id|.*[a-z]Id|uuid|.*_uuid|key|.*_key)", re.IGNORECASE)


def infer_schema(table: pa.Table, numeric=(), categorical=(), ignore=(),
                 where: str = "the table") -> tuple[Schema, list[str]]:
    """The schema of a training table, and one line per kind saying what was decided."""
    forced = {}
    for flag, names in (("numeric", numeric), ("categorical", categorical), ("ignore", ignore)):
        for name in names:
            if name not in table.column_names:
                raise InputError(f"--{flag} {name!r}: {where} has no such column; its columns "
                                 f"are {', '.join(table.column_names[:12])}")
            if name in forced:
                raise InputError(f"column {name!r} is given to both --{forced[name]} and "
                                 f"--{flag}; expected one")
            forced[name] = flag
    columns, ignored, labels, notes = [], {}, [], []
    for name, values in zip(table.column_names, table.columns):
        kind = forced.get(name)
        why = "as given"
        if kind is None:
            kind, why = _decide(name, values)
        if kind == "label":
            labels.append(name)
            ignored[name] = "looks like a label"
        elif kind == "ignore":
            ignored[name] = why
        elif kind == "numeric":
            columns.append(Column(name=name, kind="numeric"))
        else:
            levels = _levels(values)
            columns.append(Column(name=name, kind="categorical", levels=levels))
            if why != "as given":
                notes.append(_possible_label(name, values))
    if not columns:
        raise InputError(f"{where} has no column to train on ({len(ignored)} ignored: "
                         f"{_why(ignored)}); keep one with --numeric or --categorical COL")
    schema = Schema(columns=columns, ignored=ignored)
    return schema, _lines(schema, table, labels, [n for n in notes if n])


def _decide(name: str, values: pa.ChunkedArray) -> tuple[str, str]:
    kind = values.type
    if LABEL_NAME.fullmatch(name):
        return "label", "looks like a label"
    if pa.types.is_temporal(kind):
        return "ignore", "a timestamp"
    present = values.length() - values.null_count
    if present == 0:
        return "ignore", "no value"
    distinct = pc.count_distinct(values).as_py()
    if distinct == 1:
        return "ignore", "one value in every row"
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        if distinct > UNIQUE * present and present >= 20:
            return "ignore", "a distinct value in most rows: an identifier or free text"
        return "categorical", ""
    if pa.types.is_boolean(kind):
        return "categorical", ""
    if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
        return "ignore", f"of type {kind}"
    if ID_NAME.fullmatch(name) and distinct > 0.9 * present:
        return "ignore", "an identifier"
    if distinct <= CATEGORICAL_LEVELS:
        cells = values.drop_null().to_numpy(zero_copy_only=False)
        if np.all(np.isfinite(cells)) and np.all(cells == np.round(cells)):
            return "categorical", ""
    return "numeric", ""


def _levels(values: pa.ChunkedArray) -> list[str]:
    """The kept levels, most frequent first, then OTHER."""
    counts: dict[str, int] = {}
    for item in pc.value_counts(values.drop_null()).to_pylist():
        key = level_key(item["values"])
        if key is not None:
            counts[key] = counts.get(key, 0) + item["counts"]
    least = max(RARE, int(0.001 * values.length()))
    ordered = sorted(counts, key=lambda k: (-counts[k], k))
    kept = [k for k in ordered if counts[k] >= least and k != OTHER][:MAX_LEVELS - 1]
    if not kept:
        kept = ordered[:1]
    return kept + [OTHER]


def _possible_label(name: str, values: pa.ChunkedArray) -> str:
    """The column's name if it has two levels, one in under 10% of rows (as a label has)."""
    counts = [c["counts"] for c in pc.value_counts(values.drop_null()).to_pylist()]
    return name if len(counts) == 2 and min(counts) < 0.1 * sum(counts) else ""


def _lines(schema: Schema, table: pa.Table, labels: list[str], notes: list[str]) -> list[str]:
    numeric = [c.name for c in schema.columns if c.kind == "numeric"]
    categorical = [f"{c.name} ({len(c.levels) - 1} levels)" for c in schema.columns
                   if c.kind == "categorical"]
    other = {k: v for k, v in schema.ignored.items() if k not in labels}
    lines = [f"numeric ({len(numeric)}): {_list(numeric)}" if numeric else "",
             f"categorical ({len(categorical)}): {_list(categorical)}; rarer levels (fewer than "
             f"{RARE} rows, or beyond {MAX_LEVELS - 1}) and unseen ones score as {OTHER!r}"
             if categorical else "",
             f"ignored ({len(other)}): {_why(other)}; keep one with --numeric or --categorical "
             f"COL" if other else "",
             f"label-like, not a feature ({len(labels)}): {_list(labels)}; train on the normal "
             f"rows with --label-column {labels[0]}, or keep it with --numeric or --categorical "
             f"{labels[0]}" if labels else ""]
    missing = sum(table.column(c).null_count for c in schema.names)
    if missing:
        lines.append(f"missing cells: {missing} of {table.num_rows * len(schema.names)} "
                     f"({100 * missing / (table.num_rows * len(schema.names)):.1f}%), left out "
                     f"of the likelihood")
    if notes:
        lines.append(f"possible labels, kept as features ({len(notes)}: two levels, one in "
                     f"under 10% of rows): {_list(notes, 6)}; if one is the label, use "
                     f"--label-column COL")
    return [line for line in lines if line]


def _list(names: list[str], limit: int = 12) -> str:
    return ", ".join(names[:limit]) + (f", ... ({len(names) - limit} more)"
                                       if len(names) > limit else "")


def _why(ignored: dict[str, str]) -> str:
    return _list([f"{k} ({v})" for k, v in ignored.items()], 8)

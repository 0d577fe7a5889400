"""The column schema of a bundle: which table columns the model reads, and how each becomes a
cell of the model's input matrix. Every entry point (HTTP rows and records, files, OIP, Ray)
turns its input into that matrix here, and nowhere else.

The matrix x (B, C) has one float32 column per model column, in the schema's order:
- numeric: the value in raw units;
- categorical: the index of the cell's level among the column's `levels`, whose last entry is
  OTHER: levels too rare to keep in training, and any level never seen in training, are OTHER
  (a proper likelihood: an unseen level is as likely as the rare levels were, which for most
  columns is very unlikely, so it raises the score);
- a missing cell (empty, NaN, null, absent) is NaN, in either kind.
A bundle without a schema (made before it) is all numeric and takes no missing cells.
"""

import math
import re
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, Field, model_validator

from serving.core.rows import InputError, printable

OTHER = "(other)"  # the last level of every categorical column
MAX_LEVELS = 50  # kept levels per categorical column, OTHER included
_INTEGRAL = re.compile(r"[+-]?\d+(\.0*)?")


class Column(BaseModel):
    name: str
    kind: Literal["numeric", "categorical"]
    levels: list[str] | None = Field(None, description="categorical: the kept levels, then "
                                                       f"{OTHER!r}")

    @model_validator(mode="after")
    def _levels(self) -> "Column":
        if (self.kind == "categorical") != (self.levels is not None):
            raise ValueError(f"column {self.name!r}: levels are for categorical columns only")
        if self.levels is not None and (len(self.levels) < 2 or self.levels[-1] != OTHER
                                        or len(set(self.levels)) != len(self.levels)):
            raise ValueError(f"column {self.name!r}: levels must be distinct, at least one, "
                             f"then {OTHER!r}")
        return self


class Schema(BaseModel):
    """The model's columns in the order of its input matrix, and the table columns it ignores
    (with why), which files and records may carry and the file outputs pass through."""

    columns: list[Column] = Field(min_length=1)
    ignored: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def numeric(cls, names: list[str]) -> "Schema":
        return cls(columns=[Column(name=n, kind="numeric") for n in names])

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def numeric_index(self) -> list[int]:
        return [i for i, c in enumerate(self.columns) if c.kind == "numeric"]

    @property
    def categorical_index(self) -> list[int]:
        return [i for i, c in enumerate(self.columns) if c.kind == "categorical"]

    @property
    def level_counts(self) -> list[int]:
        return [len(c.levels) for c in self.columns if c.kind == "categorical"]

    @property
    def all_numeric(self) -> bool:
        return not self.categorical_index

    # -- input: arrow columns, records ------------------------------------------------------

    def from_arrow(self, table: pa.Table, where: str, first_row: int = 0) -> np.ndarray:
        """The matrix of a pyarrow table holding (at least) the model's columns by name."""
        if table.num_rows == 0:
            raise InputError(f"{where} has no rows; expected at least one row")
        x = np.empty((table.num_rows, len(self.columns)), np.float32)
        for j, column in enumerate(self.columns):
            values = table.column(column.name)
            if column.kind == "numeric":
                x[:, j] = _numeric_cells(values, column.name, where, first_row)
            else:
                x[:, j] = _codes(values, column.levels)
        return observed_rows(x, where, first_row)

    def from_records(self, records, field: str = "records") -> np.ndarray:
        """The matrix of JSON records: objects keyed by column name, whose values are numbers,
        strings or null. An absent column is a missing cell; an unknown key is refused (a
        misspelt name would otherwise be a column silently missing in every row)."""
        if not isinstance(records, list) or not records:
            raise InputError(f"{field} is empty or not a list; expected a list of objects "
                             f"keyed by column name")
        known = set(self.names) | set(self.ignored)
        columns: dict[str, list] = {c.name: [] for c in self.columns}
        for r, record in enumerate(records):
            if not isinstance(record, dict):
                raise InputError(f"{field}[{r}] is a {type(record).__name__}; expected an "
                                 f"object keyed by column name")
            for key in record:
                if key not in known:
                    raise InputError(f"{field}[{r}] has column {printable(str(key), 80)!r}, "
                                     f"which this model does not know; expected columns "
                                     f"among {_shown(self.names)} (schema in /metadata)")
            for name, values in columns.items():
                values.append(record.get(name))
        x = np.empty((len(records), len(self.columns)), np.float32)
        for j, column in enumerate(self.columns):
            values = columns[column.name]
            if column.kind == "numeric":
                x[:, j] = [_number(v, f"{field}[{r}][{column.name!r}]")
                           for r, v in enumerate(values)]
            else:
                lookup = {level: i for i, level in enumerate(column.levels)}
                other = len(column.levels) - 1
                x[:, j] = [np.nan if (key := level_key(v)) is None else lookup.get(key, other)
                           for v in values]
        return x

    # -- output: records -------------------------------------------------------------------

    def to_records(self, x: np.ndarray) -> list[dict]:
        """Rows of the matrix as records: numbers, level names, None for a missing cell."""
        columns = []
        for j, column in enumerate(self.columns):
            if column.kind == "numeric":
                columns.append([None if math.isnan(v) else v for v in x[:, j].tolist()])
            else:
                columns.append([None if math.isnan(v) else column.levels[int(v)]
                                for v in x[:, j].tolist()])
        return [dict(zip(self.names, row)) for row in zip(*columns)]

    def level_names_of(self, j: int, codes: np.ndarray) -> list[str | None]:
        """The level names of column j's codes (None for NaN)."""
        levels = self.columns[j].levels
        return [None if math.isnan(c) else levels[int(c)] for c in codes.tolist()]

    def level_chances(self, chance: np.ndarray) -> list[dict[str, float]]:
        """Each row's categorical columns' probabilities (serving.core.impute.expected_rows)."""
        names = [self.columns[j].name for j in self.categorical_index]
        values = chance[:, self.categorical_index].tolist()
        return [dict(zip(names, row)) for row in values]


def observed_rows(x: np.ndarray, where: str, first_row: int = 0) -> np.ndarray:
    """x, unless a row has no observed cell: then a one-line error naming it."""
    empty = np.flatnonzero(np.isnan(x).all(axis=1))
    if len(empty):
        raise InputError(f"{where}: row {first_row + int(empty[0])} has no observed cell in "
                         f"the model's columns; expected at least one value per row")
    return x


def level_key(value) -> str | None:
    """A cell of a categorical column as the text its level is stored under: 3, 3.0 and "3"
    are one level; booleans are "true"/"false"; None, NaN and "" are missing."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return None
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    text = str(value).strip()
    if not text:
        return None
    if _INTEGRAL.fullmatch(text):
        return str(int(float(text)))
    return text


def _number(value, where: str) -> float:
    if value is None:
        return np.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{where} is {printable(repr(value), 80)}; expected a number or null")
    if math.isinf(value) or abs(value) > np.finfo(np.float32).max:
        raise InputError(f"{where} is {value!r}; expected a finite number or null")
    return value


def _numeric_cells(values: pa.ChunkedArray, name: str, where: str, first_row: int) -> np.ndarray:
    """A numeric column as float32 with NaN for nulls; text that is not a number is refused."""
    kind = values.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        cells = pc.utf8_trim_whitespace(values)
        empty = pc.equal(cells, "")
        cells = pc.if_else(empty, pa.scalar(None, pa.string()), cells)
        try:
            values = cells.cast(pa.float64())
        except pa.ArrowInvalid:
            bad = next(i for i, v in enumerate(cells.to_pylist())
                       if v is not None and not _is_number(v))
            raise InputError(f"{where}: column {name!r} row {first_row + bad} is "
                             f"{printable(repr(cells[bad].as_py()), 60)}; expected a number or an "
                             f"empty cell") from None
    elif pa.types.is_boolean(kind) or pa.types.is_null(kind) or pa.types.is_integer(kind) \
            or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        values = values.cast(pa.float64())
    else:
        raise InputError(f"{where}: column {name!r} is {kind}, not numeric; expected numbers")
    cells = values.to_numpy(zero_copy_only=False).astype(np.float64)
    with np.errstate(over="ignore"):
        out = cells.astype(np.float32)
    bad = np.flatnonzero(np.isinf(out))
    if len(bad):
        raise InputError(f"{where}: column {name!r} row {first_row + int(bad[0])} is infinite "
                         f"(or beyond float32's range); expected finite numbers")
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _codes(values: pa.ChunkedArray, levels: list[str]) -> np.ndarray:
    """A categorical column's codes: each distinct value is mapped once (dictionary encoding),
    so a large file costs one lookup per distinct value, not per cell."""
    encoded = pc.dictionary_encode(values).combine_chunks()
    lookup = {level: i for i, level in enumerate(levels)}
    other = len(levels) - 1
    table = np.asarray([np.nan if (key := level_key(v)) is None else lookup.get(key, other)
                        for v in encoded.dictionary.to_pylist()] + [np.nan], np.float32)
    index = encoded.indices.fill_null(len(encoded.dictionary)).to_numpy(zero_copy_only=False)
    return table[index]


def _shown(names: list[str]) -> str:
    return ", ".join(repr(n) for n in names[:8]) + (", ..." if len(names) > 8 else "")

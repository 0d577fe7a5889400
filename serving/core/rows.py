"""Validation of the rows a caller hands to the runtime: one definition for HTTP, CLI and files."""

import numpy as np


class InputError(ValueError):
    """Input rows that are not what the model expects; the message names field, fault and need."""


def printable(message: str, limit: int = 400) -> str:
    """A message as one line of printable text, at most `limit` characters: an input's raw
    bytes (a .npy named .csv) are never echoed into an answer or a log."""
    text = "".join(c if c.isprintable() else "?" for c in message.replace("\n", " "))
    return text if len(text) <= limit else text[:limit - 1] + "…"


def first_nonfinite(x: np.ndarray) -> tuple[int, int, str] | None:
    """(row, column, "NaN" or "infinite") of the first non-finite value of x (B, F), or None."""
    finite = np.isfinite(x)
    if finite.all():
        return None
    r, c = np.argwhere(~finite)[0]
    return int(r), int(c), "NaN" if np.isnan(x[r, c]) else "infinite"


def check_rows(x, n_features: int, field: str = "x", max_rows: int | None = None,
               width_name: str = "feature_names", allow_missing: bool = False) -> np.ndarray:
    """Rows as a C-contiguous float32 (B, n_features) array, or an InputError saying what is
    wrong; `width_name` is the /metadata field that gives the expected width. With
    allow_missing, NaN (and None in lists) is a missing cell, and a row needs one observed."""
    if isinstance(x, np.ndarray) and x.dtype.kind in "fiu":
        rows = x
    else:
        try:
            with np.errstate(over="ignore"):  # values beyond float32 become inf, refused below
                if allow_missing and isinstance(x, list):
                    x = [[np.nan if v is None else v for v in row]
                         if isinstance(row, list) else row for row in x]
                rows = np.asarray(x, dtype=np.float32)
        except (ValueError, TypeError):
            _raise_not_numeric(x, n_features, field, width_name)
    if rows.ndim != 2:
        if rows.ndim == 1 and rows.size == 0:
            raise InputError(f"{field} is empty; expected at least one row of {n_features} numbers")
        raise InputError(f"{field} has shape {list(rows.shape)}; expected a list of rows, "
                         f"each a list of {n_features} numbers")
    if rows.shape[0] == 0:
        raise InputError(f"{field} is empty; expected at least one row of {n_features} numbers")
    if rows.shape[1] != n_features:
        raise InputError(f"{field} has {rows.shape[1]} columns; this model expects {n_features} "
                         f"({width_name} in /metadata)")
    if max_rows is not None and rows.shape[0] > max_rows:
        raise InputError(f"{field} has {rows.shape[0]} rows; at most {max_rows} are accepted "
                         f"per request (split it, or use the file endpoint)")
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    if allow_missing:
        return _observed_rows(rows, field)
    if (bad := first_nonfinite(rows)) is not None:
        r, c, what = bad
        if what == "infinite":
            what = "infinite (or beyond float32's range)"
        raise InputError(f"{field}[{r}][{c}] is {what}; expected finite numbers")
    return rows


def _observed_rows(rows: np.ndarray, field: str) -> np.ndarray:
    """Rows that may have missing cells (NaN), but no infinity and no row without a value."""
    infinite = np.argwhere(np.isinf(rows))
    if len(infinite):
        r, c = infinite[0]
        raise InputError(f"{field}[{r}][{c}] is infinite (or beyond float32's range); expected "
                         f"finite numbers or null")
    empty = np.flatnonzero(np.isnan(rows).all(axis=1))
    if len(empty):
        raise InputError(f"{field}[{empty[0]}] has no observed cell; expected at least one "
                         f"value per row")
    return rows


def _raise_not_numeric(x, n_features: int, field: str, width_name: str):
    if not isinstance(x, (list, tuple)):
        raise InputError(f"{field} is a {type(x).__name__}; expected a list of rows, "
                         f"each a list of {n_features} numbers")
    for r, row in enumerate(x):
        if not isinstance(row, (list, tuple)):
            raise InputError(f"{field}[{r}] is a {type(row).__name__}; expected a list of "
                             f"{n_features} numbers")
        if len(row) != n_features:
            raise InputError(f"{field}[{r}] has {len(row)} values; this model expects "
                             f"{n_features} ({width_name} in /metadata)")
        for c, value in enumerate(row):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InputError(f"{field}[{r}][{c}] is {printable(repr(value), 80)}; expected "
                                 f"a number")
    raise InputError(f"{field} could not be read as numbers; expected a list of rows, "
                     f"each a list of {n_features} numbers")

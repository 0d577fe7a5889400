"""A request's rows as the model's matrix."""

import numpy as np

from serving.core.rows import InputError, check_rows
from serving.core.runtime import VAERuntime


def request_rows(runtime: VAERuntime, max_rows: int, x, field: str = "x",
                 records=None) -> np.ndarray:
    """The model's matrix of a request's rows: `x` (numbers, null for a missing cell) or
    `records` (objects keyed by column name), exactly one of them; `z` codes for field "z"."""
    manifest = runtime.manifest
    width, name = (manifest.latent_dim, "latent_dim") if field == "z" \
        else (manifest.n_features, "feature_names")
    schema = runtime.schema if field == "x" else None
    if field == "x" and (x is None) == (records is None):
        raise InputError("give either x (rows of numbers) or records (objects keyed by column "
                         "name); expected exactly one of them")
    if records is not None:
        if not records:
            raise InputError("records is empty; expected at least one object keyed by column "
                             "name")
        if len(records) > max_rows:  # before any conversion
            raise InputError(f"records has {len(records)} rows; at most {max_rows} are "
                             f"accepted per request")
        return runtime.check(records, "records")
    if schema is not None and not schema.all_numeric and \
            not isinstance(x, np.ndarray):  # an array: the matrix, converted already (OIP)
        raise InputError("x is for models whose columns are all numeric; this one has "
                         "categorical columns: send records, objects keyed by column name "
                         "(schema in /metadata)")
    return check_rows(x, width, field, max_rows, name, allow_missing=schema is not None)

"""A bento's container has no model store: `packaged_model` finds the models it carries."""

import os
from pathlib import Path


def packaged_model(ref: str, manifest: str = "manifest.json") -> Path | None:
    """Inside a bento's container (BENTO_PATH set) its models sit in $BENTO_PATH/models/NAME/
    VERSION, with NAME/latest naming the newest, and `bentoml.models.get` does not look there:
    found there, a batch job in the image needs no model store."""
    root = os.environ.get("BENTO_PATH")
    if not root:
        return None
    name, _, version = ref.partition(":")
    models = Path(root) / "models" / name
    if version in ("", "latest") and (models / "latest").is_file():
        version = (models / "latest").read_text().strip()
    path = models / version if version else None
    return path if path is not None and (path / manifest).is_file() else None

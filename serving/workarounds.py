"""Where BentoML 1.4 does not do what this service needs, and what we do instead.

Every place the code works around BentoML is here, with the upstream reference, so that a
BentoML upgrade means reading this one file. Imports nothing of ours.

- A bento's container has no model store: `packaged_model` finds the models it carries.
- GET on a field-less POST endpoint (/metadata): `read_by_get` rewrites the request.
- #5540 (the client to a dependency service closes its session every 100 requests) and #4971
  (its keep-alive outlives the server's) no longer touch us: the service has no dependency
  since the model runs in the API process (serving/http/service.py). Reintroduce a
  `bentoml.depends` and both come back.
"""

import os
from pathlib import Path

JSON_HEADERS = [(b"content-type", b"application/json")]


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


async def _empty_object():
    return {"type": "http.request", "body": b"{}", "more_body": False}


def read_by_get(scope: dict, receive, paths: tuple[str, ...]):
    """BentoML routes every API as POST; a GET on one of `paths` (field-less endpoints such
    as /metadata) is passed on as a POST of `{}`. Returns the (scope, receive) to use."""
    if scope["method"] == "GET" and scope["path"] in paths:
        scope = {**scope, "method": "POST", "headers": [*scope.get("headers", []), *JSON_HEADERS]}
        return scope, _empty_object
    return scope, receive

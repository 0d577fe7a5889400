"""`make fuzz`: schemathesis over the service's OpenAPI schema against a real `bentoml serve`.

    .venv/bin/python -m bench.fuzz [--model bundles/digits] [--examples 200]

Every operation of /docs.json gets generated requests, valid and not; then every route of the
Open Inference Protocol under /v2, from an OpenAPI schema written here from the pydantic
models the service validates infer requests with (serving.http.oip). The pass condition is no
answer of 500 or above. Prints schemathesis's summary and the count of cases of each.
"""

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import DEFAULT_MODEL, served


def protocol_schema(name: str) -> dict:
    """OpenAPI 3.0 of the /v2 routes, the infer body being serving.http.oip.InferRequest."""
    from serving.http.oip import InferRequest

    body = InferRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    components = body.pop("$defs", {})
    components["InferRequest"] = body
    get = {"get": {"responses": {"200": {"description": "ok"}}}}
    paths = {"/v2": get, "/v2/health/live": get, "/v2/health/ready": get,
             f"/v2/models/{name}": get, f"/v2/models/{name}/ready": get,
             f"/v2/models/{name}/infer": {"post": {
                 "requestBody": {"required": True, "content": {"application/json": {
                     "schema": {"$ref": "#/components/schemas/InferRequest"}}}},
                 "responses": {"200": {"description": "ok"}, "400": {"description": "bad"}}}}}
    return {"openapi": "3.0.3", "info": {"title": "Open Inference Protocol", "version": "2"},
            "paths": paths, "components": {"schemas": components}}


def run(schema: str, url: str | None, examples: int) -> tuple[int, str, str]:
    """schemathesis on one schema: its exit code, the count of cases and its output. It runs
    in a directory of its own, where it leaves its `.schemathesis/` cache."""
    with tempfile.TemporaryDirectory() as cache:
        done = subprocess.run(
            [str(Path(sys.executable).with_name("schemathesis")), "run",
             str(Path(schema).resolve()) if Path(schema).exists() else schema,
             *(["--url", url] if url else []),
             "--checks", "not_a_server_error", "--max-examples", str(examples),
             "--request-timeout", "60", "--generation-deterministic", "--no-color"],
            capture_output=True, text=True, cwd=cache)
    cases = re.search(r"(\d+) generated", done.stdout)
    return done.returncode, cases.group(1) if cases else "?", done.stdout[-6000:] + \
        done.stderr[-2000:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--examples", type=int, default=200, help="per operation")
    args = parser.parse_args()
    from serving.core.bundle import load_bundle
    name = load_bundle(args.model).manifest.name
    with served(args.model, {"VAE_ORT_THREADS": "1"}) as url, \
            tempfile.TemporaryDirectory() as tmp:
        api = run(f"{url}/docs.json", None, args.examples)
        (Path(tmp) / "v2.json").write_text(json.dumps(protocol_schema(name)))
        protocol = run(str(Path(tmp) / "v2.json"), url, args.examples)
    failed = 0
    for what, (code, cases, output) in (("API", api), ("/v2", protocol)):
        print(output)
        print(f"fuzz {what}: {cases} generated cases, schemathesis exit {code} "
              f"({'no 5xx' if code == 0 else 'FAILED'})")
        failed |= code
    return failed


if __name__ == "__main__":
    sys.exit(main())

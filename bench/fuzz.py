"""`make fuzz`: schemathesis over the service's OpenAPI schema against a real `bentoml serve`.

    .venv/bin/python -m bench.fuzz [--model bundles/digits] [--examples 200]

Every operation of /docs.json gets generated requests, valid and not; the pass condition is
no answer of 500 or above. Prints schemathesis's summary and the count of cases.
"""

import argparse
import re
import subprocess
import sys
from pathlib import Path

from bench.common import DEFAULT_MODEL, served


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--examples", type=int, default=200, help="per operation")
    args = parser.parse_args()
    with served(args.model, {"VAE_ORT_THREADS": "1"}) as url:
        done = subprocess.run(
            [str(Path(sys.executable).with_name("schemathesis")), "run", f"{url}/docs.json",
             "--checks", "not_a_server_error", "--max-examples", str(args.examples),
             "--request-timeout", "60", "--generation-deterministic", "--no-color"],
            capture_output=True, text=True)
    print(done.stdout[-6000:], done.stderr[-2000:], sep="\n")
    cases = re.search(r"(\d+) generated", done.stdout)
    print(f"fuzz: {cases.group(1) if cases else '?'} generated cases, schemathesis exit "
          f"{done.returncode} ({'no 5xx' if done.returncode == 0 else 'FAILED'})")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())

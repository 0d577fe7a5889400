"""The API page at `/` in headless Chromium (Debian's `chromium`): for the smoke test and
tests/http/test_api_page.py.

The page is BentoML's Swagger UI, which fetches /docs.json and renders one block per operation
(`data-path` names its path). The check: the server's access log shows the page's own GET
/docs.json answered 200 (read before anything else asks for it), every path of /docs.json is
on the rendered page, and each endpoint with a JSON body has its example there.
"""

import re
import subprocess
import tempfile
from pathlib import Path

import httpx

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--no-first-run", "--virtual-time-budget=15000", "--hide-scrollbars"]
ACCESS = re.compile(r"method=GET,path=/docs\.json[^)]*\) \(status=200")


def documented(url: str) -> tuple[list[str], list[str]]:
    """(every path of url/docs.json, the POST paths whose JSON body has no example)."""
    spec = httpx.get(f"{url.rstrip('/')}/docs.json", timeout=10).json()
    without = []
    for path, operations in spec["paths"].items():
        body = operations.get("post", {}).get("requestBody", {}).get("content", {})
        for media in body.values():
            if "example" not in str(media) and path != "/metadata":
                without.append(path)
    return list(spec["paths"]), without


def load_page(chromium: str, url: str, screenshot: Path, timeout: float = 120) -> str:
    """The page's DOM once its scripts ran (and a screenshot of it)."""
    with tempfile.TemporaryDirectory() as profile:
        flags = [chromium, *FLAGS, f"--user-data-dir={profile}"]
        dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True,
                             timeout=timeout, check=True).stdout
        subprocess.run([*flags, "--window-size=1280,2200", f"--screenshot={screenshot}", url],
                       capture_output=True, timeout=timeout, check=True)
    return dom


def unlisted(dom: str, paths: list[str]) -> list[str]:
    """The paths that the rendered page does not list (Swagger UI: data-path="...")."""
    return [path for path in paths if f'data-path="{path}"' not in dom]


def docs_json_answered(log: str) -> int:
    """How many GET /docs.json BentoML's access log shows answered 200."""
    return len(ACCESS.findall(log))

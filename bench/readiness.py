"""Waiting for a started service to report ready: for tests, benchmarks and the smoke test."""

import time
from collections.abc import Callable

import httpx


def wait_ready(url: str, timeout: float = 120.0, alive: Callable[[], bool] = lambda: True,
               what: str = "the service") -> None:
    """Poll url/readyz until it answers 200; RuntimeError if `alive()` turns false or time ends."""
    deadline = time.monotonic() + timeout
    while True:
        if not alive():
            raise RuntimeError(f"{what} exited before it was ready")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not answer 200 on /readyz within {timeout:.0f} s")
        time.sleep(0.5)

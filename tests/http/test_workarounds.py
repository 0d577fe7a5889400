"""The BentoML and uvicorn workarounds that can be checked without a server."""

import asyncio

from serving.framework.server import request_timers_cancelled


def run_through_timeout_middleware(app, timeout: float, requests: int = 1):
    """Answers to `requests` requests through BentoML's TimeoutMiddleware (patched), and its
    timers still pending (not cancelled) afterwards."""
    from bentoml._internal.server.http.traffic import TimeoutMiddleware

    request_timers_cancelled()
    middleware = TimeoutMiddleware(app, timeout=timeout)

    async def main():
        answers = []
        for _ in range(requests):
            sent = []

            async def send(message, sent=sent):
                sent.append(message)

            async def receive():
                return {"type": "http.request", "body": b""}
            await middleware({"type": "http", "path": "/x", "method": "POST"}, receive, send)
            answers.append(sent)
        loop = asyncio.get_running_loop()
        pending = [h for h in loop._scheduled if not h.cancelled()
                   and getattr(h._callback, "__name__", "") == "_set_timer_out"]
        return answers, pending
    return asyncio.run(main())


async def quick_app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def test_a_finished_request_leaves_no_timer_behind():
    """BentoML's request timeout left a 120 s timer per request holding the request's context
    (600 MB more in a worker under load): none is left pending now."""
    answers, pending = run_through_timeout_middleware(quick_app, timeout=120, requests=50)
    assert all(sent[0]["status"] == 200 for sent in answers)
    assert pending == []


def test_a_request_over_the_timeout_still_gets_504():
    async def slow_app(scope, receive, send):
        await asyncio.sleep(30)

    answers, pending = run_through_timeout_middleware(slow_app, timeout=0.2)
    assert answers[0][0]["status"] == 504
    assert pending == []

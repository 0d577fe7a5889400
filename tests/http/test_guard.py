"""The per-worker budget of graph work in flight (issue 24 #3)."""

import asyncio

from serving.http.guard import Budget


def test_work_beyond_the_budget_waits_for_its_share():
    async def scenario():
        budget, order = Budget(100), []

        async def work(name: str, amount: int, seconds: float):
            async with budget.hold(amount):
                order.append(f"{name} in ({budget.used})")
                await asyncio.sleep(seconds)
            order.append(f"{name} out")
        await asyncio.gather(work("a", 60, 0.05), work("b", 60, 0.0), work("c", 30, 0.0))
        return order, budget.used
    order, used = asyncio.run(scenario())
    assert order[:2] == ["a in (60)", "c in (90)"]  # b (60 more) waits until a is done
    assert order.index("b in (60)") > order.index("a out") and used == 0

"""The budget's plan and its in-process bucket: rates within the key's limit, priorities as reserves."""

from __future__ import annotations

import pytest

from processor.settings import Secret
from processor.stripe_api.budget import BudgetPlan, Priority, budget_key
from processor.tokenbucket import TokenBuckets


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("limit", [25.0, 100.0, 8.0])
def test_a_second_never_spends_more_than_the_key_allows(limit: float) -> None:
    """Refill rate plus bucket size (the most any one second can see) stays within the key's limit."""
    plan = BudgetPlan(limit, headroom=0.1)
    assert plan.rate + plan.capacity <= limit
    assert plan.rate >= limit / 2
    assert plan.reserve(Priority.USER) < plan.reserve(Priority.CONSUMER) < plan.reserve(Priority.BACKGROUND)


def test_lower_priorities_leave_the_last_tokens_to_higher_ones() -> None:
    """With the bucket drained to the consumer's reserve, a user still gets a token at once, the consumer waits."""
    plan = BudgetPlan(25.0)
    clock = FakeClock()
    bucket = TokenBuckets(plan.capacity, plan.rate, clock=clock)
    taken = 0
    while bucket.take("k", plan.reserve(Priority.CONSUMER)) == 0.0:
        taken += 1
    assert taken == plan.capacity - 1  # a consumer burst takes all but one
    assert bucket.take("k", plan.reserve(Priority.BACKGROUND)) > 0
    assert bucket.take("k", plan.reserve(Priority.USER)) == 0.0
    wait = bucket.take("k", plan.reserve(Priority.CONSUMER))
    assert wait == pytest.approx(2 / plan.rate)
    clock.now += wait
    assert bucket.take("k", plan.reserve(Priority.CONSUMER)) == 0.0


def test_drain_pauses_every_taker() -> None:
    """After a 429 the bucket gives nothing for the pause, to any priority."""
    clock = FakeClock()
    bucket = TokenBuckets(3, 10.0, clock=clock)
    bucket.drain("k", 1.0)
    assert bucket.take("k") == pytest.approx(1.1)
    clock.now += 1.2
    assert bucket.take("k") == 0.0


def test_budget_key_never_holds_the_api_key() -> None:
    """The key's budget is named by a hash prefix; two keys get two budgets."""
    one, two = budget_key(Secret("sk_test_one")), budget_key(Secret("sk_test_two"))
    assert one != two and "sk_test" not in one and one.startswith("sha256:")

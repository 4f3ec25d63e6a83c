"""Delay sites by dotted path, the site registry, and the wall-clock baseline."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from stateful.scheduler import Scheduler, run_concurrently
from stateful.sites import SITES, DelaySites, is_known_site
from stateful.strategies import FixedDelays, WallClockDelays

from tests.engine import programs


class Account:
    """Code we don't own: no checkpoints of its own."""

    balance = 0

    def read(self) -> int:
        return self.balance

    def write(self, value: int) -> None:
        self.balance = value

    @staticmethod
    def audit() -> str:
        return "audited"


def deposit(account: Account) -> None:
    account.write(account.read() + 1)


SITES_UNDER_TEST = {
    "account.read": "tests.engine.test_sites_and_baselines.Account.read",
    "account.audit": "tests.engine.test_sites_and_baselines.Account.audit",
}


def test_delay_sites_wrap_callables_by_dotted_path():
    account = Account()
    with DelaySites(SITES_UNDER_TEST, target="engine-test"):
        assert Account.audit() == "audited"
        result = Scheduler(FixedDelays({(0, "account.read:after", 0): 1})).run(
            [("a", lambda: deposit(account)), ("b", lambda: deposit(account))]
        )
    assert account.balance == 1, "the delay after the read lets the other deposit in"
    assert [e.site for e in result.trace if e.task == 0 and e.kind == "reach"] == [
        "account.read:before",
        "account.read:after",
    ]
    assert is_known_site("account.read:before") and SITES["account.read:after"].target == "engine-test"


def test_delay_sites_are_removed_on_cleanup():
    original = Account.__dict__["read"]
    with DelaySites(SITES_UNDER_TEST, target="engine-test"):
        assert Account.__dict__["read"] is not original
        assert isinstance(Account.__dict__["audit"], staticmethod)
    assert Account.__dict__["read"] is original


def test_lock_sites_are_known_without_registration():
    assert is_known_site("lock:compute_resources:acquire")
    assert not is_known_site("no.such.site")


@settings(max_examples=5, deadline=None, database=None)
@given(st.data())
def test_wall_clock_baseline_runs_free_threads(data):
    counter = programs.Counter()
    result = run_concurrently(WallClockDelays(data, max_sleep=0.0005), programs.increments(counter))
    assert all(outcome.error is None for outcome in result.outcomes)
    assert counter.value in (1, 2)
    assert {e.kind for e in result.trace} >= {"start", "reach", "finish"}

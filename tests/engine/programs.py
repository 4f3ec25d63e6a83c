"""Small concurrent programs with known races, for testing the engine itself."""

from __future__ import annotations

from typing import Any, Callable

from oslo_concurrency import lockutils

from stateful.scheduler import checkpoint


class Counter:
    """A shared counter whose increment is a read, a switch point, then a write."""

    def __init__(self) -> None:
        self.value = 0

    def increment(self) -> None:
        seen = self.value
        checkpoint("counter.read")
        self.value = seen + 1
        checkpoint("counter.write")

    def locked_increment(self) -> None:
        with lockutils.lock("counter", fair=True):
            self.increment()


def increments(counter: Counter, locked: bool = False, tasks: int = 2) -> list[tuple[str, Callable[[], Any]]]:
    body = counter.locked_increment if locked else counter.increment
    return [(f"increment-{n}", body) for n in range(tasks)]


def abba(first: str = "a", second: str = "b") -> list[tuple[str, Callable[[], Any]]]:
    """Two tasks taking two locks in opposite orders."""

    def take(outer: str, inner: str) -> Callable[[], None]:
        def body() -> None:
            with lockutils.lock(outer):
                checkpoint("abba.between")
                with lockutils.lock(inner):
                    pass

        return body

    return [("ab", take(first, second)), ("ba", take(second, first))]

"""Any serial sequence of operations leaves the default model consistent.

With no concurrency every operation runs to its end before the next starts;
then the services' accounting must equal the oracle's after every step, and
an audit of every host must change nothing.  (Nova's designed lag after a
move, which the model fixes by default, is ``nova-open-delete-after-move``.)
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models import oracle
from models.errors import Rejected
from models.service import Cloud
from models.topology import Topology, small_topology
from stateful.topology import topologies
from tests.models.helpers import assert_consistent, audit_all

HOSTS = ["host1", "host2", "host3", "host4"]

creates = st.tuples(st.just("create"), st.integers(0, 5), st.sampled_from([None, *HOSTS]))
operations = st.one_of(
    creates,
    st.tuples(st.just("delete"), st.integers(0, 7)),
    st.tuples(st.just("resize"), st.integers(0, 7), st.integers(0, 5), st.sampled_from([None, *HOSTS])),
    st.tuples(st.just("migrate"), st.integers(0, 7), st.sampled_from([None, *HOSTS])),
    st.tuples(st.just("confirm"), st.integers(0, 7)),
    st.tuples(st.just("revert"), st.integers(0, 7)),
    st.tuples(st.just("evacuate"), st.integers(0, 7), st.sampled_from([None, *HOSTS])),
    st.tuples(st.just("live_migrate"), st.integers(0, 7), st.sampled_from([None, *HOSTS]), st.booleans()),
    st.tuples(st.just("host_down"), st.sampled_from(HOSTS), st.booleans()),
    st.tuples(st.just("audit"), st.sampled_from(HOSTS)),
)


def apply(c: Cloud, uuids: list[str], op: tuple[Any, ...]) -> None:
    flavors = list(c.flavors)
    hosts = list(c.hosts)

    def host(name: str | None) -> str | None:
        return None if name is None else hosts[HOSTS.index(name) % len(hosts)]

    def instance(index: int) -> str:
        return uuids[index % len(uuids)] if uuids else "00000000-0000-0000-0000-00000000dead"

    name, *args = op
    if name == "create":
        uuids.append(c.create(flavors[args[0] % len(flavors)], host(args[1])))
    elif name == "delete":
        c.delete(instance(args[0]))
    elif name == "resize":
        c.resize(instance(args[0]), flavors[args[1] % len(flavors)], host(args[2]))
    elif name == "migrate":
        c.migrate(instance(args[0]), host(args[1]))
    elif name == "confirm":
        c.confirm_resize(instance(args[0]))
    elif name == "revert":
        c.revert_resize(instance(args[0]))
    elif name == "evacuate":
        c.evacuate(instance(args[0]), host(args[1]))
    elif name == "live_migrate":
        c.live_migrate(instance(args[0]), host(args[1]), fail=args[2])
    elif name == "host_down":
        c.set_host_down(host(args[0]) or "", args[1])
    else:
        c.update_available_resource(host(args[0]) or "")


def walk(topology: Topology, ops: list[tuple[Any, ...]]) -> None:
    c = Cloud(topology)
    uuids: list[str] = []
    for op in ops:
        try:
            apply(c, uuids, op)
        except Rejected:
            pass
        assert_consistent(c)
    before = oracle.observe(c)
    audit_all(c)
    after = oracle.observe(c)
    assert after["usage"] == before["usage"]
    assert after["allocations"] == before["allocations"]


#: a few instances first, so that most operations have something to act on
walks = st.builds(
    lambda first, rest: first + rest,
    st.lists(creates, min_size=1, max_size=4),
    st.lists(operations, max_size=30),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(walks)
def test_serial_walks_on_the_small_topology(ops):
    walk(small_topology(), ops)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topologies(), walks)
def test_serial_walks_on_drawn_topologies(topology, ops):
    walk(Topology.from_dict(topology), ops)

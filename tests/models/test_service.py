"""The facade's contract with the harness: plain-data topology and observations,
registered delay sites, determinism and speed."""

from __future__ import annotations

import json

from hypothesis import given, settings

from models import oracle, sites
from models.service import Cloud
from models.topology import Topology, small_topology
from stateful.scheduler import RunResult
from stateful.sites import SITES, is_known_site
from stateful.target import Observation
from stateful.topology import topologies
from tests.models.helpers import cloud, run_concurrently


def test_topology_round_trips_through_json():
    topology = small_topology()
    assert Topology.from_dict(json.loads(json.dumps(topology.to_dict()))) == topology


@settings(max_examples=20, deadline=None)
@given(topologies())
def test_the_suites_drawn_topologies_load(data):
    topology = Topology.from_dict(data)
    assert topology.to_dict() == data
    Cloud(topology)


def test_unknown_topology_keys_are_refused():
    data = small_topology().to_dict()
    data["hosts"][0]["gpus"] = 2
    try:
        Topology.from_dict(data)
    except ValueError as error:
        assert "gpus" in str(error)
    else:
        raise AssertionError("an unknown key was accepted")


def test_observations_are_plain_data_in_the_suites_shape():
    c = cloud()
    uuid = c.create("pci", "host1")
    c.resize(uuid, "medium", "host2")
    for observed in (oracle.observe(c), oracle.expected(c)):
        assert json.loads(json.dumps(observed)) == observed
        Observation(**observed)
    assert oracle.observe(c)["usage"]["host1" + oracle.SAVED] == oracle.observe(c)["usage"]["host1"]
    assert set(oracle.observe(c, include_saved=False)["usage"]) == {"host1", "host2", "host3"}


def test_the_counters_alone_are_the_full_observations_counters():
    """observe(include_saved=False), made at every checkpoint, is the full observation's
    in-memory usage, owner maps, reserved amounts and down hosts."""
    c = cloud()
    pinned = c.create("pinned", "host1")
    c.create("pci", "host2")
    c.resize(pinned, "pinned-large", "host3")
    c.set_host_down("host2", True)
    full, counters = oracle.observe(c), oracle.observe(c, include_saved=False)
    in_memory = {node: amounts for node, amounts in full["usage"].items() if not node.endswith(oracle.SAVED)}
    assert counters["usage"] == in_memory
    for field in ("reserved", "pci_owners", "cpu_owners", "down_hosts"):
        assert counters[field] == full[field]
    Observation(**counters)


def test_consumers_can_be_described():
    c = cloud()
    uuid = c.create("small", "host1")
    c.migrate(uuid, "host2")
    migration = c.db.migrations[1]
    assert c.describe_consumer(uuid) == ("instance", uuid)
    assert c.describe_consumer(migration.uuid) == ("migration", uuid)
    assert c.describe_consumer("nobody") == ("unknown", None)


def scenario() -> tuple[Cloud, RunResult]:
    c = cloud()
    first = c.create("pinned", "host1")
    second = c.create("pci", "host1")
    c.resize(first, "pinned-large", "host2")
    result = run_concurrently(
        [
            ("confirm", lambda: c.confirm_resize(first)),
            ("live migration", lambda: c.live_migrate(second, "host3", fail=True)),
            ("create", lambda: c.create("medium")),
            ("audit", lambda: c.update_available_resource("host1")),
        ],
        {
            (0, "db.migration.save", 0): 3,
            (1, "placement.move_allocations", 0): 2,
            (3, "db.instance.get_by_host_and_node", 0): 1,
        },
    )
    return c, result


def test_runs_are_deterministic():
    (c1, r1), (c2, r2) = scenario(), scenario()
    assert [str(e) for e in r1.trace] == [str(e) for e in r2.trace]
    assert oracle.observe(c1) == oracle.observe(c2)
    assert c1.placement.allocations == c2.placement.allocations


def test_every_site_reached_is_registered():
    _, result = scenario()
    reached = {event.site for event in result.trace if event.kind == "reach"}
    assert reached and all(is_known_site(site) for site in reached)
    model_sites = {name for name, site in SITES.items() if site.target == "model"}
    assert {getattr(sites, name) for name in dir(sites) if name.isupper()} == model_sites

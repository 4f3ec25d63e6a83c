"""The embedded compute service (``models``) as a fuzzing target."""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping

from models import oracle
from models.errors import InstanceNotFound, Rejected
from models.service import Cloud
from models.topology import Topology
from stateful.lengths import operation_lengths
from stateful.target import Observation, Op


class ModelTarget:
    """Drives :class:`models.service.Cloud`; instances are named by the machine, not by uuid."""

    name = "model"
    rejections: tuple[type[BaseException], ...] = (Rejected,)
    observes_from_any_thread = True  # plain Python objects, read while no task runs
    tasks_as_greenlets = True  # pure Python that waits only on the scheduler's locks

    #: About how many checkpoints each operation reaches, for the schedule
    #: strategy (:data:`CHECKPOINT_HINTS`, measured below once the class exists).
    checkpoint_hints: Mapping[str, int] = {}

    def __init__(self) -> None:
        self.cloud: Cloud | None = None
        self.uuids: dict[str, str] = {}
        self.names: dict[str, str] = {}

    def setup(self, topology: Mapping[str, Any]) -> None:
        self.cloud = Cloud(Topology.from_dict(topology))
        self.uuids, self.names = {}, {}

    def teardown(self) -> None:
        self.cloud = None

    # -- operations ---------------------------------------------------------------------

    def operation(self, op: Op) -> Callable[[], Any]:
        return functools.partial(getattr(self, f"_{op.name}"), **op.args)

    def _uuid(self, instance: str) -> str:
        uuid = self.uuids.get(instance)
        if uuid is None:
            raise InstanceNotFound(instance)
        return uuid

    def _create(self, instance: str, flavor: str, host: str) -> None:
        uuid = self._cloud().create(flavor, host)
        self.uuids[instance], self.names[uuid] = uuid, instance

    def _delete(self, instance: str) -> None:
        self._cloud().delete(self._uuid(instance))

    def _resize(self, instance: str, flavor: str, host: str) -> None:
        self._cloud().resize(self._uuid(instance), flavor, host)

    def _migrate(self, instance: str, host: str) -> None:
        self._cloud().migrate(self._uuid(instance), host)

    def _confirm(self, instance: str) -> None:
        self._cloud().confirm_resize(self._uuid(instance))

    def _revert(self, instance: str) -> None:
        self._cloud().revert_resize(self._uuid(instance))

    def _evacuate(self, instance: str, host: str) -> None:
        self._cloud().evacuate(self._uuid(instance), host)

    def _live_migrate(self, instance: str, host: str) -> None:
        self._cloud().live_migrate(self._uuid(instance), host)

    def _live_migrate_rollback(self, instance: str, host: str) -> None:
        self._cloud().live_migrate(self._uuid(instance), host, fail=True)

    def _host_down(self, host: str) -> None:
        self._cloud().set_host_down(host, True)

    def _host_up(self, host: str) -> None:
        self._cloud().set_host_down(host, False)

    def _audit(self, host: str) -> None:
        self._cloud().update_available_resource(host)

    def _cloud(self) -> Cloud:
        assert self.cloud is not None, "setup() first"
        return self.cloud

    # -- observations ---------------------------------------------------------------------

    def observe(self) -> Observation:
        return self._observation(oracle.observe(self._cloud()))

    def observe_counters(self) -> Observation:
        return self._observation(oracle.observe(self._cloud(), include_saved=False))

    def expected(self) -> Observation:
        return self._observation(oracle.expected(self._cloud()))

    def _observation(self, raw: dict[str, Any]) -> Observation:
        raw["servers"] = {self.names.get(uuid, uuid): server for uuid, server in raw["servers"].items()}
        return Observation(**raw)

    def describe(self, consumer: str) -> str:
        kind, uuid = self._cloud().describe_consumer(consumer)
        name = self.names.get(uuid or "", uuid)
        return {"instance": f"{name}", "migration": f"migration of {name}"}.get(kind, consumer)


#: Measured once, at import: before any session has switched a fault on.
CHECKPOINT_HINTS = operation_lengths(ModelTarget)
ModelTarget.checkpoint_hints = CHECKPOINT_HINTS

"""Why the embedded compute service refuses an operation, and how its objects fail.

Every refusal Nova's API, conductor or compute manager would give is a
subclass of :class:`Rejected`: the fuzzer treats those as legitimate
outcomes, never as accounting errors.  Everything else here is an internal
failure (a pinned CPU pinned twice, a PCI device freed twice, a stale
task-state write): the code paths Nova would log as an error and that the
fuzzer reports as unexpected.
"""

from __future__ import annotations


class Rejected(Exception):
    """The operation was refused; nothing it would have changed has changed."""


class InstanceNotFound(Rejected):
    def __init__(self, uuid: str) -> None:
        super().__init__(f"instance {uuid} could not be found")


class FlavorNotFound(Rejected):
    def __init__(self, name: str) -> None:
        super().__init__(f"flavor {name!r} could not be found")


class ComputeHostNotFound(Rejected):
    def __init__(self, host: str) -> None:
        super().__init__(f"compute host {host} could not be found")


class InstanceInvalidState(Rejected):
    """The instance's vm_state/task_state does not allow the operation."""


class MigrationNotFound(Rejected):
    """Confirm or revert with no finished migration to act on."""


class CannotResizeToSameFlavor(Rejected):
    def __init__(self) -> None:
        super().__init__("when resizing, instances must change flavor")


class UnableToMigrateToSelf(Rejected):
    def __init__(self, uuid: str, host: str) -> None:
        super().__init__(f"unable to migrate instance {uuid} to current host {host}")


class ServiceUnavailable(Rejected):
    """The compute service the operation needs is down."""


class ComputeServiceInUse(Rejected):
    """Evacuating from a host whose compute service is still up."""


class NoValidHost(Rejected):
    def __init__(self, reason: str) -> None:
        super().__init__(f"no valid host was found: {reason}")


class ComputeResourcesUnavailable(Rejected):
    """A compute host's claim failed (no free pinnable CPUs or PCI devices)."""


class HostBusy(Rejected):
    """A host is not brought back while an operation acts in its place (the model's restriction)."""


class InstanceBusy(Rejected):
    """Another operation on the instance is still in flight (delete, confirm and revert are exclusive)."""


class UnexpectedTaskStateError(Exception):
    """A save guarded by ``expected_task_state`` found another task state (a lost race)."""


class UnexpectedDeletingTaskStateError(UnexpectedTaskStateError):
    pass


class CPUPinningInvalid(Exception):
    """Pinning a CPU that is already pinned (``NUMACell.pin_cpus``)."""


class CPUUnpinningInvalid(Exception):
    """Unpinning a CPU that is not pinned (``NUMACell.unpin_cpus``)."""


class PciDeviceInvalidStatus(Exception):
    pass


class PciDeviceInvalidOwner(Exception):
    pass


class AllocationConflict(Exception):
    """Placement refused an allocation: the provider lacks capacity."""

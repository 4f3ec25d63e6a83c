"""Placement: one resource provider per compute node, allocations keyed by consumer.

A consumer is an instance uuid or, during a move, a migration uuid holding
the source node's share (Nova's migration-based allocations).  Writes are
atomic with their capacity check, as Placement's are; the delay site is
before each call, so a concurrent operation may change what the call sees.
"""

from __future__ import annotations

from dataclasses import dataclass

from models import sites
from models.errors import AllocationConflict
from models.records import Flavor
from stateful.scheduler import checkpoint

VCPU = "VCPU"
PCPU = "PCPU"
MEMORY_MB = "MEMORY_MB"
DISK_GB = "DISK_GB"
#: The resource class of the devices a flavor's PCI alias requests.
PCI_DEVICE = "CUSTOM_PCI_DEVICE"

#: provider -> resource class -> amount
Allocations = dict[str, dict[str, int]]


@dataclass(frozen=True)
class Inventory:
    total: int
    reserved: int = 0
    allocation_ratio: float = 1.0

    @property
    def capacity(self) -> int:
        return int((self.total - self.reserved) * self.allocation_ratio)


def resources_for(flavor: Flavor) -> dict[str, int]:
    """What a flavor asks of one provider; zero amounts are left out, as Nova does."""
    resources = {
        PCPU if flavor.cpu_dedicated else VCPU: flavor.vcpus,
        MEMORY_MB: flavor.memory_mb,
        DISK_GB: flavor.root_gb,
        PCI_DEVICE: flavor.pci_devices,
    }
    return {rc: amount for rc, amount in resources.items() if amount}


class Placement:
    def __init__(self) -> None:
        self.inventories: dict[str, dict[str, Inventory]] = {}
        #: consumer -> provider -> resource class -> amount
        self.allocations: dict[str, Allocations] = {}

    def create_provider(self, name: str, inventories: dict[str, Inventory]) -> None:
        self.inventories[name] = {rc: inv for rc, inv in inventories.items() if inv.total}

    def usage(self, provider: str, excluding: str | None = None) -> dict[str, int]:
        used: dict[str, int] = {}
        for consumer, allocations in self.allocations.items():
            if consumer == excluding:
                continue
            for rc, amount in allocations.get(provider, {}).items():
                used[rc] = used.get(rc, 0) + amount
        return used

    def _fits(self, provider: str, resources: dict[str, int], excluding: str | None = None) -> bool:
        inventory = self.inventories.get(provider)
        if inventory is None:
            return False
        used = self.usage(provider, excluding)
        for rc, amount in resources.items():
            inv = inventory.get(rc)
            if inv is None or used.get(rc, 0) + amount > inv.capacity:
                return False
        return True

    def get_allocation_candidates(self, resources: dict[str, int], providers: list[str]) -> list[str]:
        """The providers among ``providers`` (in that order) with room for ``resources``."""
        checkpoint(sites.PLACEMENT_GET_ALLOCATION_CANDIDATES)
        return [provider for provider in providers if self._fits(provider, resources)]

    def put_allocations(self, consumer: str, allocations: Allocations) -> None:
        """Replace the consumer's allocations; AllocationConflict if a provider lacks room."""
        checkpoint(sites.PLACEMENT_PUT_ALLOCATIONS)
        self._put(consumer, allocations)

    def _put(self, consumer: str, allocations: Allocations) -> None:
        for provider, resources in allocations.items():
            if not self._fits(provider, resources, excluding=consumer):
                raise AllocationConflict(
                    f"provider {provider} cannot fit {resources} for consumer {consumer}"
                )
        self._set(consumer, allocations)

    def claim_resources(
        self, consumer: str, provider: str, resources: dict[str, int], merge: bool = False
    ) -> None:
        """The scheduler's claim: the consumer gets ``resources`` on ``provider``.

        With ``merge`` the consumer keeps what it holds elsewhere (an
        evacuation keeps the dead source's share); the read and the write are
        one atomic step, as Placement's consumer generations make them.
        """
        checkpoint(sites.PLACEMENT_PUT_ALLOCATIONS)
        allocations = self.get_allocations_for_consumer(consumer) if merge else {}
        allocations[provider] = dict(resources)
        self._put(consumer, allocations)

    def move_allocations(self, source: str, target: str) -> bool:
        """Give the target the source's allocations (replacing its own); False if source has none."""
        checkpoint(sites.PLACEMENT_MOVE_ALLOCATIONS)
        moved = self.allocations.pop(source, None)
        if not moved:
            return False
        self.allocations[target] = moved
        return True

    def delete_allocation(self, consumer: str) -> None:
        checkpoint(sites.PLACEMENT_DELETE_ALLOCATION)
        self.allocations.pop(consumer, None)

    def remove_provider_from_allocation(self, consumer: str, provider: str) -> bool:
        """``remove_provider_tree_from_instance_allocation``: drop one provider's share."""
        checkpoint(sites.PLACEMENT_REMOVE_PROVIDER_FROM_ALLOCATION)
        allocations = self.allocations.get(consumer)
        if not allocations or provider not in allocations:
            return False
        self._set(consumer, {p: r for p, r in allocations.items() if p != provider})
        return True

    def get_allocations_for_consumer(self, consumer: str) -> Allocations:
        return {
            provider: dict(resources) for provider, resources in self.allocations.get(consumer, {}).items()
        }

    def get_allocations_for_provider(self, provider: str) -> dict[str, dict[str, int]]:
        checkpoint(sites.PLACEMENT_GET_ALLOCATIONS_FOR_PROVIDER)
        return {
            consumer: dict(allocations[provider])
            for consumer, allocations in self.allocations.items()
            if provider in allocations
        }

    def _set(self, consumer: str, allocations: Allocations) -> None:
        kept = {provider: dict(resources) for provider, resources in allocations.items() if resources}
        if kept:
            self.allocations[consumer] = kept
        else:
            self.allocations.pop(consumer, None)

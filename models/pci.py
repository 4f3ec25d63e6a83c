"""The PCI device tracker of one compute node, as ``nova/pci/manager.py`` keeps it.

Devices move available -> claimed -> allocated and back to available.  The
tracker also keeps, per instance uuid, the devices it claimed and the devices
allocated to it; the audit's :meth:`PciDevTracker.clean_usage` frees every
claim and allocation whose instance appears in neither of its reads.  The
device state is persisted with :meth:`save` and a restarted service rebuilds
its tracker from it, as Nova's ``_initial_instance_usage`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

from models import sites
from models.errors import ComputeResourcesUnavailable, PciDeviceInvalidOwner, PciDeviceInvalidStatus
from stateful.scheduler import checkpoint

if TYPE_CHECKING:
    from models.db import Database

AVAILABLE = "available"
CLAIMED = "claimed"
ALLOCATED = "allocated"

#: address -> (status, owning instance uuid or None), as stored in the database.
DeviceStates = dict[str, tuple[str, str | None]]


@dataclass
class PciDevice:
    address: str
    status: str = AVAILABLE
    instance_uuid: str | None = None

    def claim(self, instance_uuid: str) -> None:
        if self.status != AVAILABLE:
            raise PciDeviceInvalidStatus(f"device {self.address} is {self.status}, cannot be claimed")
        self.status, self.instance_uuid = CLAIMED, instance_uuid

    def allocate(self, instance_uuid: str) -> None:
        if self.status not in (AVAILABLE, CLAIMED):
            raise PciDeviceInvalidStatus(f"device {self.address} is {self.status}, cannot be allocated")
        if self.status == CLAIMED and self.instance_uuid != instance_uuid:
            raise PciDeviceInvalidOwner(
                f"device {self.address} is claimed by {self.instance_uuid}, not {instance_uuid}"
            )
        self.status, self.instance_uuid = ALLOCATED, instance_uuid

    def free(self, instance_uuid: str | None = None) -> None:
        if self.status not in (CLAIMED, ALLOCATED):
            raise PciDeviceInvalidStatus(f"device {self.address} is {self.status}, cannot be freed")
        if instance_uuid is not None and self.instance_uuid != instance_uuid:
            raise PciDeviceInvalidOwner(
                f"device {self.address} belongs to {self.instance_uuid}, not {instance_uuid}"
            )
        self.status, self.instance_uuid = AVAILABLE, None


class PciDevTracker:
    def __init__(self, db: Database, nodename: str, addresses: Iterable[str]) -> None:
        self.db = db
        self.nodename = nodename
        stored = db.pci_devices.get(nodename, {})
        self.devices: dict[str, PciDevice] = {}
        for address in sorted(addresses):
            status, owner = stored.get(address, (AVAILABLE, None))
            self.devices[address] = PciDevice(address, status, owner)
        self.claims: dict[str, list[PciDevice]] = {}
        self.allocations: dict[str, list[PciDevice]] = {}
        self._initial_instance_usage()
        self._dirty = nodename not in db.pci_devices

    def _initial_instance_usage(self) -> None:
        for device in self.devices.values():
            if device.instance_uuid is None:
                continue
            mapping = self.claims if device.status == CLAIMED else self.allocations
            mapping.setdefault(device.instance_uuid, []).append(device)

    def free_count(self) -> int:
        return sum(1 for device in self.devices.values() if device.status == AVAILABLE)

    def claim_instance(self, instance_uuid: str, count: int) -> tuple[str, ...]:
        """Claim ``count`` free devices, lowest addresses first (``consume_requests``)."""
        if not count:
            return ()
        free = [device for device in self.devices.values() if device.status == AVAILABLE]
        if len(free) < count:
            raise ComputeResourcesUnavailable(
                f"{self.nodename}: PCI device request for {count} failed, {len(free)} free"
            )
        devices = free[:count]
        for device in devices:
            device.claim(instance_uuid)
        self.claims[instance_uuid] = devices
        self._dirty = True
        return tuple(device.address for device in devices)

    def allocate_instance(self, instance_uuid: str) -> None:
        devices = self.claims.pop(instance_uuid, [])
        for device in devices:
            device.allocate(instance_uuid)
        if devices:
            self.allocations.setdefault(instance_uuid, []).extend(devices)
            self._dirty = True

    def free_device(self, address: str, instance_uuid: str) -> None:
        """Free one device an instance had, whoever holds it now (Nova checks no owner here)."""
        device = self.devices.get(address)
        if device is None:
            return
        for mapping in (self.allocations, self.claims):
            held = mapping.get(instance_uuid, [])
            if device in held:
                held.remove(device)
                if not held:
                    del mapping[instance_uuid]
        device.free()
        self._dirty = True

    def free_instance_allocations(self, instance_uuid: str) -> None:
        self._free_mapped(self.allocations, instance_uuid, ALLOCATED)

    def free_instance_claims(self, instance_uuid: str) -> None:
        self._free_mapped(self.claims, instance_uuid, CLAIMED)

    def free_instance(self, instance_uuid: str) -> None:
        self.free_instance_allocations(instance_uuid)
        self.free_instance_claims(instance_uuid)

    def _free_mapped(self, mapping: dict[str, list[PciDevice]], instance_uuid: str, status: str) -> None:
        if not mapping.pop(instance_uuid, None):
            return
        for device in self.devices.values():
            if device.status == status and device.instance_uuid == instance_uuid:
                device.free(instance_uuid)
                self._dirty = True

    def update_pci_for_instance(self, instance_uuid: str, sign: int) -> None:
        if not self.devices:
            return
        if sign == -1:
            self.free_instance(instance_uuid)
        if sign == 1:
            self.allocate_instance(instance_uuid)

    def clean_usage(self, instance_uuids: Iterable[str], migration_instance_uuids: Iterable[str]) -> None:
        """Free every claim and allocation whose instance appears in neither read."""
        existed = dict.fromkeys(instance_uuids)
        existed.update(dict.fromkeys(migration_instance_uuids))
        for mapping in (self.claims, self.allocations):
            for uuid in list(mapping):
                if uuid not in existed:
                    for device in mapping.pop(uuid):
                        device.free()
                    self._dirty = True

    def save(self) -> None:
        if not self._dirty:
            return
        checkpoint(sites.DB_PCI_DEVICE_SAVE)
        self.db.pci_devices[self.nodename] = self.states()
        self._dirty = False

    def states(self) -> DeviceStates:
        return {address: (device.status, device.instance_uuid) for address, device in self.devices.items()}

    def owners(self) -> dict[str, list[str]]:
        """Device -> every instance it is claimed or allocated to, by status and by the maps."""
        owners: dict[str, list[str]] = {}
        for address, device in self.devices.items():
            if device.instance_uuid is not None:
                owners[address] = [device.instance_uuid]
        for mapping in (self.claims, self.allocations):
            for uuid, devices in mapping.items():
                for device in devices:
                    listed = owners.setdefault(device.address, [])
                    if uuid not in listed:
                        listed.append(uuid)
        return owners

"""The compute hosts and flavors a cloud starts with: plain data, JSON round-trippable.

The dict form is the one regression files store and ``stateful.topology``
draws (``{"hosts": [...], "flavors": [...]}``); :meth:`Topology.from_dict`
rejects unknown keys so a mistyped file fails loudly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from models.records import Flavor


@dataclass(frozen=True)
class HostSpec:
    name: str
    #: Shared CPUs (placement's VCPU inventory).
    vcpus: int
    memory_mb: int
    local_gb: int
    cpu_allocation_ratio: float = 1.0
    ram_allocation_ratio: float = 1.0
    disk_allocation_ratio: float = 1.0
    reserved_host_cpus: int = 0
    reserved_host_memory_mb: int = 0
    reserved_host_disk_gb: int = 0
    #: Addresses of the passthrough devices a flavor's PCI alias matches.
    pci_devices: tuple[str, ...] = ()
    #: The cpu_dedicated_set: CPU ids dedicated-CPU flavors pin (PCPU inventory).
    pinnable_cpus: tuple[int, ...] = ()


@dataclass(frozen=True)
class Topology:
    hosts: tuple[HostSpec, ...]
    flavors: tuple[Flavor, ...]

    def __post_init__(self) -> None:
        for kind, names in (
            ("host", [h.name for h in self.hosts]),
            ("flavor", [f.name for f in self.flavors]),
        ):
            if len(set(names)) != len(names):
                raise ValueError(f"duplicate {kind} names in {names}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "hosts": [
                {
                    **asdict(host),
                    "pci_devices": list(host.pci_devices),
                    "pinnable_cpus": list(host.pinnable_cpus),
                }
                for host in self.hosts
            ],
            "flavors": [asdict(flavor) for flavor in self.flavors],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Topology:
        _check_keys("topology", data, {"hosts", "flavors"})
        hosts = []
        for host in data["hosts"]:
            _check_keys(f"host {host.get('name')!r}", host, {f.name for f in fields(HostSpec)})
            values = dict(host)
            values["pci_devices"] = tuple(values.get("pci_devices", ()))
            values["pinnable_cpus"] = tuple(values.get("pinnable_cpus", ()))
            hosts.append(HostSpec(**values))
        flavors = []
        for flavor in data["flavors"]:
            _check_keys(f"flavor {flavor.get('name')!r}", flavor, {f.name for f in fields(Flavor)})
            flavors.append(Flavor(**flavor))
        return cls(tuple(hosts), tuple(flavors))


def _check_keys(what: str, data: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValueError(f"{what}: unknown keys {unknown}")


def small_topology() -> Topology:
    """Three hosts with pinnable CPUs and PCI devices, and one flavor of each kind."""
    hosts = tuple(
        HostSpec(
            name=f"host{n}",
            vcpus=8,
            memory_mb=8192,
            local_gb=80,
            reserved_host_cpus=1,
            reserved_host_memory_mb=512,
            reserved_host_disk_gb=1,
            pci_devices=("0000:81:00.0", "0000:81:00.1"),
            pinnable_cpus=(8, 9, 10, 11),
        )
        for n in (1, 2, 3)
    )
    flavors = (
        Flavor("small", vcpus=1, memory_mb=512, root_gb=1),
        Flavor("medium", vcpus=2, memory_mb=1024, root_gb=2),
        Flavor("large", vcpus=4, memory_mb=2048, root_gb=4),
        Flavor("pci", vcpus=1, memory_mb=512, root_gb=1, pci_devices=1),
        Flavor("pinned", vcpus=2, memory_mb=1024, root_gb=2, cpu_dedicated=True),
        Flavor("pinned-large", vcpus=4, memory_mb=2048, root_gb=4, cpu_dedicated=True),
    )
    return Topology(hosts, flavors)

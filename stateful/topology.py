"""Topologies: the compute nodes and flavors an example starts with, as plain data.

A topology is a JSON-able dict so that it can be stored in regression files
and handed to any target::

    {"hosts": [{"name": "host1", "vcpus": 8, "memory_mb": 8192, "local_gb": 80,
                "cpu_allocation_ratio": 2.0, "ram_allocation_ratio": 1.0,
                "disk_allocation_ratio": 1.0, "reserved_host_cpus": 0,
                "reserved_host_memory_mb": 512, "reserved_host_disk_gb": 0,
                "pci_devices": ["0000:81:00.0", ...], "pinnable_cpus": [0, 1, ...]}, ...],
     "flavors": [{"name": "small", "vcpus": 1, "memory_mb": 512, "root_gb": 1,
                  "cpu_dedicated": false, "pci_devices": 0}, ...]}
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

MIN_HOSTS, MAX_HOSTS = 2, 4


def pci_addresses(count: int) -> list[str]:
    return [f"0000:81:00.{slot}" for slot in range(count)]


#: Each host attribute's choices, built once (Hypothesis validates every new strategy).
_CHOICES = {
    "vcpus": st.sampled_from([4, 8, 16]),
    "memory_mb": st.sampled_from([4096, 8192, 16384]),
    "local_gb": st.sampled_from([40, 80, 160]),
    "cpu_allocation_ratio": st.sampled_from([1.0, 2.0, 4.0]),
    "ram_allocation_ratio": st.sampled_from([1.0, 1.5]),
    "reserved_host_cpus": st.sampled_from([0, 1]),
    "reserved_host_memory_mb": st.sampled_from([0, 512]),
    "reserved_host_disk_gb": st.sampled_from([0, 1]),
    "pci_devices": st.integers(1, 3),
    "pinnable_cpus": st.sampled_from([0, 2, 4]),
}
_HOST_COUNT = st.integers(MIN_HOSTS, MAX_HOSTS)


def draw_host(draw: st.DrawFn, name: str) -> dict[str, Any]:
    """One compute node's capacities, allocation ratios, reserved amounts and devices."""
    choose = {key: draw(strategy) for key, strategy in _CHOICES.items()}
    vcpus = choose["vcpus"]
    return {
        "name": name,
        "vcpus": vcpus,
        "memory_mb": choose["memory_mb"],
        "local_gb": choose["local_gb"],
        "cpu_allocation_ratio": choose["cpu_allocation_ratio"],
        "ram_allocation_ratio": choose["ram_allocation_ratio"],
        "disk_allocation_ratio": 1.0,
        "reserved_host_cpus": choose["reserved_host_cpus"],
        "reserved_host_memory_mb": choose["reserved_host_memory_mb"],
        "reserved_host_disk_gb": choose["reserved_host_disk_gb"],
        "pci_devices": pci_addresses(choose["pci_devices"]),
        # Dedicated (pinned) CPUs come from a separate set, as Nova's cpu_dedicated_set.
        "pinnable_cpus": list(range(vcpus, vcpus + choose["pinnable_cpus"])),
    }


FLAVORS = [
    {"name": "small", "vcpus": 1, "memory_mb": 512, "root_gb": 1, "cpu_dedicated": False, "pci_devices": 0},
    {"name": "medium", "vcpus": 2, "memory_mb": 1024, "root_gb": 2, "cpu_dedicated": False, "pci_devices": 0},
    {"name": "large", "vcpus": 4, "memory_mb": 2048, "root_gb": 4, "cpu_dedicated": False, "pci_devices": 0},
    {"name": "pci", "vcpus": 1, "memory_mb": 512, "root_gb": 1, "cpu_dedicated": False, "pci_devices": 1},
    {"name": "pinned", "vcpus": 2, "memory_mb": 1024, "root_gb": 2, "cpu_dedicated": True, "pci_devices": 0},
]


@st.composite
def topologies(draw: st.DrawFn) -> dict[str, Any]:
    """2 to 4 hosts with drawn capacities, and every kind of flavor (plain, PCI, pinned)."""
    count = draw(_HOST_COUNT)
    return {"hosts": [draw_host(draw, f"host{n}") for n in range(1, count + 1)], "flavors": list(FLAVORS)}


def example_topology(host_count: int = 2) -> dict[str, Any]:
    """A fixed, roomy topology (every flavor fits several times) for benchmarks and hand-written tests."""
    return {
        "hosts": [
            {
                "name": f"host{n}",
                "vcpus": 16,
                "memory_mb": 16384,
                "local_gb": 160,
                "cpu_allocation_ratio": 1.0,
                "ram_allocation_ratio": 1.0,
                "disk_allocation_ratio": 1.0,
                "reserved_host_cpus": 0,
                "reserved_host_memory_mb": 512,
                "reserved_host_disk_gb": 0,
                "pci_devices": pci_addresses(2),
                "pinnable_cpus": [16, 17, 18, 19],
            }
            for n in range(1, host_count + 1)
        ],
        "flavors": list(FLAVORS),
    }

"""The database's indexes answer every query exactly as a scan of all stored rows would."""

from __future__ import annotations

from models.db import Database
from models.records import TERMINAL_MIGRATION_STATUSES
from tests.models.helpers import cloud


def scanned(db: Database) -> dict[str, list[object]]:
    """The queries' answers from a scan of every row ever stored, in the tables' order."""
    migrations = list(db.migrations.values())
    finished: dict[str, list[int]] = {}
    for m in migrations:
        if m.status == "finished":
            finished.setdefault(m.instance_uuid, []).append(m.id)
    return {
        "instances": [
            (host, [u for u, row in db.instances.items() if not row.deleted and row.host == host])
            for host in db.compute_nodes
        ],
        "in_progress_and_error": [
            (
                host,
                [
                    m.id
                    for m in migrations
                    if m.status not in TERMINAL_MIGRATION_STATUSES
                    and (m.source_node == host or m.dest_node == host)
                ],
            )
            for host in db.compute_nodes
        ],
        "of_instance": [(u, [m.id for m in migrations if m.instance_uuid == u]) for u in db.instances],
        "latest_finished": [(u, max(finished.get(u, []), default=None)) for u in db.instances],
    }


def queried(db: Database) -> dict[str, list[object]]:
    def latest_finished(uuid: str) -> int | None:
        found = db.migration_get_by_instance_and_status(uuid, "finished")
        return None if found is None else found.id

    hosts = list(db.compute_nodes)
    return {
        "instances": [(h, [i.uuid for i in db.instance_get_all_by_host_and_node(h, h)]) for h in hosts],
        "in_progress_and_error": [
            (h, [m.id for m in db.migration_get_in_progress_and_error(h, h)]) for h in hosts
        ],
        "of_instance": [(u, [m.id for m in db.migrations_of(u)]) for u in db.instances],
        "latest_finished": [(u, latest_finished(u)) for u in db.instances],
    }


def test_queries_match_a_scan_of_every_row():
    c = cloud()
    kept = c.create("small", "host1")
    gone = c.create("small", "host1")
    c.migrate(gone, "host2")
    c.confirm_resize(gone)
    assert queried(c.db) == scanned(c.db)
    c.delete(gone)
    c.resize(kept, "medium", "host2")
    c.revert_resize(kept)
    c.resize(kept, "large", "host3")
    assert queried(c.db) == scanned(c.db)
    # A stale copy reopens the oldest, confirmed migration ('error' is not terminal):
    # it is read again, before the newer one still in progress.
    stale = c.db.migrations[1].copy_for(c.db)
    stale.status = "error"
    stale.save()
    assert [m.id for m in c.db.migration_get_in_progress_and_error("host2", "host2")] == [1]
    assert [m.id for m in c.db.migration_get_in_progress_and_error("host1", "host1")] == [1, 3]
    assert queried(c.db) == scanned(c.db)

"""`chronodb restore` carries the source cluster's settings over (it kept only max_offset: GC retention,
size limits and [limits] came back as defaults), through the backup manifest's `settings`."""

from __future__ import annotations

import json
import pathlib

import attrs
import pytest

from tools.backup import cluster_settings
from tools.backup_format import Backup, BackupError
from tools.restore import restored_config
from txn.api.cluster import TransportLimits
from txn.node.config import ConfigError, generate

TABLETS = [{"id": "t1", "start": "", "end": "80"}, {"id": "t2", "start": "80", "end": None}]


def backup_of(manifest: dict) -> Backup:
    return Backup(pathlib.Path("/backups/b1"), json.loads(json.dumps(manifest)), "0" * 64)  # as read from disk


def test_a_restored_cluster_has_the_source_settings() -> None:
    source = attrs.evolve(generate(max_offset_ns=20_000_000), gc_retention_ns=7_200_000_000_000, max_key_bytes=1024,
                          max_value_bytes=8 << 20,
                          limits=TransportLimits(max_connections=4096, client_idle_timeout_ns=90_000_000_000))
    manifest = {"max_offset_ns": source.max_offset_ns, "settings": cluster_settings(source), "tablets": TABLETS}
    restored = restored_config(backup_of(manifest), nodes=3, port=7400)
    assert (restored.max_offset_ns, restored.gc_retention_ns, restored.max_key_bytes, restored.max_value_bytes) == \
        (20_000_000, 7_200_000_000_000, 1024, 8 << 20)
    assert restored.limits == source.limits
    assert [t.id for t in restored.tablets] == ["t1", "t2"] and restored.cluster_id != source.cluster_id


def test_a_backup_from_before_settings_restores_with_the_defaults() -> None:
    restored = restored_config(backup_of({"max_offset_ns": 10_000_000, "tablets": TABLETS}), nodes=3, port=7400)
    defaults = generate()
    assert (restored.gc_retention_ns, restored.max_value_bytes, restored.limits) == \
        (defaults.gc_retention_ns, defaults.max_value_bytes, TransportLimits())


@pytest.mark.parametrize("settings, error", [
    ({"gc_retention_ns": 1}, BackupError),  # keys missing
    ({"gc_retention_ns": 3600, "max_key_bytes": 4096, "max_value_bytes": 1 << 40, "limits": {}}, ConfigError),
])
def test_malformed_or_invalid_settings_are_one_clear_error(settings: dict, error: type) -> None:
    with pytest.raises(error) as caught:
        restored_config(backup_of({"max_offset_ns": 10_000_000, "settings": settings, "tablets": TABLETS}), 3, 7400)
    assert "\n" not in str(caught.value)

"""Specification of src.tracking.record: what every run records, read back with MlflowClient."""

from __future__ import annotations

import time

import pytest

from src.config.schema import TrackingConfig
from src.tracking import record
from tests.conftest import Store


@pytest.mark.parametrize(("enabled", "expected"), [(True, True), (False, False)])
def test_training_runs_record_system_metrics_unless_switched_off(
    store: Store, enabled: bool, expected: bool
) -> None:
    cfg = TrackingConfig(
        uri=store.uri,
        dir=str(store.root / "mlruns"),
        system_metrics=enabled,
        system_metrics_interval=0.5,
    )
    with record.run(record.setup(cfg), "busy", {}, record.system_metrics(cfg)) as active:
        assert active is not None
        time.sleep(2.0)  # a few sampling intervals
    metrics = store.client().get_run(active.info.run_id).data.metrics
    system = {name for name in metrics if name.startswith("system/")}
    assert bool(system) is expected, sorted(metrics)
    if expected:
        assert {
            "system/cpu_utilization_percentage",
            "system/system_memory_usage_megabytes",
        } <= system

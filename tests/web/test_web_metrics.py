"""``/metrics`` parses with prometheus_client's parser and counts what happened to the images."""

from __future__ import annotations

from admin_world import AdminWorld
from prometheus_client.parser import text_string_to_metric_families

from osteonode.web.metrics import LATENCY_BUCKETS_S


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_count_received_routed_skipped_analysed_and_dead_images(
    admin_world: AdminWorld,
) -> None:
    status, content_type, body = admin_world.get("/metrics")

    assert status == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    samples = _samples(body.decode())
    assert samples[("osteonode_images_received_total", ())] == 3
    assert samples[("osteonode_images_routed_total", (("pipeline", "lumbar"),))] == 2
    assert samples[("osteonode_images_skipped_total", (("reason", "lateral_view"),))] == 1
    assert samples[("osteonode_images_analysed_total", (("pipeline", "lumbar"),))] == 2
    assert samples[("osteonode_deliveries", (("destination", "pacs"), ("state", "dead")))] == 4
    assert samples[("osteonode_deliveries", (("destination", "pacs"), ("state", "sent")))] == 0
    for state in ("pending", "queued", "running"):
        assert samples[("osteonode_queue_depth", (("state", state),))] == 0
    for phase, count in (("queue", 2), ("analysis", 2), ("delivery", 0)):
        assert samples[("osteonode_phase_duration_seconds_count", (("phase", phase),))] == count
        assert (
            samples[("osteonode_phase_duration_seconds_bucket", (("le", "+Inf"), ("phase", phase)))]
            == count
        )
        # A film is routed and analysed within seconds here.
        if count:
            assert (
                samples[
                    ("osteonode_phase_duration_seconds_bucket", (("le", "60.0"), ("phase", phase)))
                ]
                == count
            )
    assert len(LATENCY_BUCKETS_S) + 1 == sum(
        1
        for name, labels in samples
        if name == "osteonode_phase_duration_seconds_bucket" and ("phase", "queue") in labels
    )
    assert samples[("osteonode_process_workers_alive", ())] == 1
    assert samples[("osteonode_process_pipeline_loaded", (("pipeline", "lumbar"),))] == 1

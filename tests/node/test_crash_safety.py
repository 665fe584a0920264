"""A node killed mid-stream loses nothing it acknowledged; a node asked to stop stops cleanly."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from fixtures.peers import (
    NODE_AE,
    SENDER_AE,
    NodeProcess,
    dataset_part,
    make_radiograph,
    require_binary,
)

IMAGES = 40
KILL_AFTER = 12


def acknowledged_files(storescu_output: str) -> list[Path]:
    """Files whose C-STORE storescu saw answered with Success (from its verbose output)."""
    acknowledged, current = [], None
    for line in storescu_output.splitlines():
        if line.startswith("I: Sending file: "):
            current = Path(line.removeprefix("I: Sending file: ").strip())
        elif "Received Store Response (Success)" in line and current is not None:
            acknowledged.append(current)
            current = None
    return acknowledged


def test_sigkill_mid_stream_loses_no_acknowledged_image_and_jobs_run_after_restart(
    node_factory: Callable[..., NodeProcess], tmp_path: Path
) -> None:
    node = node_factory({"workers": {"lease_seconds": 2.0}}).start()
    images = [
        make_radiograph(tmp_path / f"stream{index:02d}.dcm", rows=1024, columns=1024, seed=index)
        for index in range(IMAGES)
    ]
    command = [require_binary("storescu"), "-v", "-aet", SENDER_AE, "-aec", NODE_AE]
    sender = subprocess.Popen(
        [*command, "127.0.0.1", str(node.port), *map(str, images)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    node.wait_for_events("received", KILL_AFTER, timeout_s=60)
    node.stop(signal.SIGKILL)
    output, _ = sender.communicate(timeout=60)

    acknowledged = acknowledged_files(output)
    assert 0 < len(acknowledged) < IMAGES, output
    node.start()
    uids = [pydicom.dcmread(image, stop_before_pixels=True).SOPInstanceUID for image in acknowledged]
    # A job claimed just before the kill waits for its 2 s lease to expire, then runs again.
    jobs = node.wait_until_routed(len(acknowledged), timeout_s=60, uids=uids)
    for image, uid in zip(acknowledged, uids, strict=True):
        job = jobs[uid]
        assert dataset_part(job.spool_file) == dataset_part(image)
        assert (job.state, job.pipeline) == ("queued", "lumbar")
    assert not list(node.spool_dir.rglob(".tmp-*")), "a half-written file survived the restart"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_the_node_cleanly(node: NodeProcess, sig: signal.Signals) -> None:
    started = time.monotonic()

    exit_code = node.stop(sig)

    assert exit_code == 0
    assert time.monotonic() - started < 15
    events = [event.get("event") for event in node.log_events()]
    assert events.index("scp_stopped") < events.index("node_stopped")
    assert "worker_stopped" in events


def test_sigterm_lets_the_association_in_progress_finish(
    node_factory: Callable[..., NodeProcess], tmp_path: Path
) -> None:
    node = node_factory().start()
    images = [
        make_radiograph(tmp_path / f"late{index:02d}.dcm", rows=1024, columns=1024, seed=index)
        for index in range(20)
    ]
    command = [require_binary("storescu"), "-v", "-aet", SENDER_AE, "-aec", NODE_AE]
    sender = subprocess.Popen(
        [*command, "127.0.0.1", str(node.port), *map(str, images)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    node.wait_for_events("received", 3, timeout_s=60)

    exit_code = node.stop(signal.SIGTERM)
    output, _ = sender.communicate(timeout=60)

    assert exit_code == 0
    assert sender.returncode == 0, output
    assert len(acknowledged_files(output)) == len(images)
    assert node.wait_for_events("received", len(images))


def test_node_that_cannot_listen_exits_with_an_error(
    node: NodeProcess, node_factory: Callable[..., NodeProcess]
) -> None:
    second = node_factory({"node": {"port": node.port}}, name="second")

    with pytest.raises(RuntimeError, match="node exited at start"):
        second.start()

    assert second.process is not None and second.process.returncode == 1
    failure = second.wait_for_log(lambda event: event.get("event") == "node_start_failed")
    assert "in use" in failure["error"]

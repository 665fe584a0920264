"""Who may associate with the node: called AE title, caller allow-list, source address, capacity."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fixtures.peers import NodeProcess, echoscu, make_radiograph, storescu
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from osteonode.config import AllowedCaller, AssociationPolicy
from osteonode.dicom.admission import (
    Admission,
    RefusalReason,
    check_association,
    resolve_allow_list,
)


def decide(policy: AssociationPolicy, **request: object) -> RefusalReason | None:
    arguments: dict[str, object] = {
        "node_ae_title": "OSTEONODE",
        "called_ae_title": "OSTEONODE",
        "calling_ae_title": "MODALITY",
        "calling_host": "127.0.0.1",
    }
    arguments.update(request)
    refusal = check_association(policy, **arguments)  # type: ignore[arg-type]
    return None if refusal is None else refusal.reason


def test_default_policy_accepts_any_caller_from_this_machine_only() -> None:
    assert decide(AssociationPolicy()) is None
    assert decide(AssociationPolicy(), called_ae_title="OSTEONODE  ") is None
    assert decide(AssociationPolicy(), calling_host="::1") is None
    assert decide(AssociationPolicy(), calling_host="::ffff:127.0.0.1") is None
    assert decide(AssociationPolicy(), calling_host="10.1.2.3") is (
        RefusalReason.CALLING_AE_NOT_RECOGNISED
    )


def test_an_empty_allow_list_admits_nobody_and_a_wildcard_admits_anyone() -> None:
    assert decide(AssociationPolicy(allowed_callers=[])) is RefusalReason.CALLING_AE_NOT_RECOGNISED
    anyone = AssociationPolicy(allowed_callers=[AllowedCaller(ae_title="*")])
    assert decide(anyone, calling_host="192.0.2.7", calling_ae_title="WHOEVER") is None


def test_allow_list_entries_may_name_a_network() -> None:
    policy = AssociationPolicy(
        allowed_callers=[AllowedCaller(ae_title="CR_ROOM", host="10.1.2.0/24")]
    )
    assert decide(policy, calling_ae_title="CR_ROOM", calling_host="10.1.2.200") is None
    assert decide(policy, calling_ae_title="CR_ROOM", calling_host="10.1.3.1") is (
        RefusalReason.CALLING_HOST_NOT_ALLOWED
    )


def test_policy_refuses_a_wrong_called_title_unless_told_not_to_check() -> None:
    assert decide(AssociationPolicy(), called_ae_title="ANY-SCP") is (
        RefusalReason.CALLED_AE_NOT_RECOGNISED
    )
    assert decide(AssociationPolicy(require_called_ae=False), called_ae_title="ANY-SCP") is None


def test_policy_allow_list_checks_title_and_pinned_address() -> None:
    policy = AssociationPolicy(
        allowed_callers=[
            AllowedCaller(ae_title="PACS"),
            AllowedCaller(ae_title="MODALITY", host="10.0.0.7"),
        ]
    )
    assert decide(policy, calling_ae_title="PACS", calling_host="192.168.1.1") is None
    assert decide(policy, calling_ae_title="MODALITY", calling_host="10.0.0.7") is None
    assert decide(policy, calling_ae_title="MODALITY", calling_host="::ffff:10.0.0.7") is None
    assert decide(policy, calling_ae_title="MODALITY") is RefusalReason.CALLING_HOST_NOT_ALLOWED
    assert decide(policy, calling_ae_title="STRANGER") is RefusalReason.CALLING_AE_NOT_RECOGNISED


def test_policy_refuses_beyond_the_maximum_number_of_established_associations() -> None:
    policy = AssociationPolicy(max_associations=2)
    assert decide(policy, established=1) is None
    assert decide(policy, established=2) is RefusalReason.TOO_MANY_ASSOCIATIONS


def test_per_caller_limits_leave_room_for_other_callers() -> None:
    policy = AssociationPolicy(
        max_associations=10,
        max_associations_per_caller=3,
        allowed_callers=[
            AllowedCaller(ae_title="PACS", max_associations=6),
            AllowedCaller(ae_title="*", host="127.0.0.1"),
        ],
    )
    admission = Admission(policy, "OSTEONODE")

    def request(key: object, caller: str) -> RefusalReason | None:
        refusal = admission.request(
            key, called_ae_title="OSTEONODE", calling_ae_title=caller, calling_host="127.0.0.1"
        )
        return None if refusal is None else refusal.reason

    assert [request(("CR", n), "CR_ROOM") for n in range(4)] == [None, None, None, (
        RefusalReason.TOO_MANY_FROM_CALLER
    )]
    assert [request(("PACS", n), "PACS") for n in range(7)][-2:] == [None, (
        RefusalReason.TOO_MANY_FROM_CALLER
    )]
    assert request("DX1", "DX_ROOM") is None
    assert request("DX2", "DX_ROOM") is RefusalReason.TOO_MANY_ASSOCIATIONS
    admission.end(("CR", 0))
    assert request("DX2", "DX_ROOM") is None
    assert admission.established == 10


def test_allow_list_host_names_are_resolved_and_unresolvable_ones_refused() -> None:
    (rule,) = resolve_allow_list(
        AssociationPolicy(allowed_callers=[AllowedCaller(ae_title="PACS", host="localhost")])
    )
    assert rule.admits("PACS", "127.0.0.1")
    with pytest.raises(ValueError, match="cannot be resolved"):
        resolve_allow_list(
            AssociationPolicy(
                allowed_callers=[AllowedCaller(ae_title="PACS", host="no-such-host.invalid")]
            )
        )


def test_wrong_called_title_is_rejected_as_called_ae_not_recognised(node: NodeProcess) -> None:
    done = echoscu(node.port, called_ae="SOMEONE-ELSE")

    assert done.returncode != 0
    assert "Called AE Title Not Recognized" in done.stderr
    refusal = node.wait_for_log(lambda event: event.get("event") == "association_refused")
    assert refusal["reason"] == "called_ae_not_recognised"
    assert refusal["called_ae"] == "SOMEONE-ELSE"
    refused = node.events_of("refused")
    assert [details["reason"] for details in refused] == ["called_ae_not_recognised"]


def test_caller_outside_the_allow_list_is_rejected_and_listed_caller_stores(
    node_factory: Callable[..., NodeProcess], tmp_path: Path
) -> None:
    node = node_factory(
        {"association": {"allowed_callers": [{"ae_title": "PACS", "host": "127.0.0.1"}]}}
    ).start()
    image = make_radiograph(tmp_path / "image.dcm")

    stranger = storescu(node.port, [image], calling_ae="MODALITY")
    listed = storescu(node.port, [image], calling_ae="PACS")

    assert stranger.returncode != 0
    assert "Calling AE Title Not Recognized" in stranger.stderr
    assert listed.returncode == 0 and "Received Store Response (Success)" in listed.stderr
    refusal = node.wait_for_log(lambda event: event.get("event") == "association_refused")
    assert (refusal["reason"], refusal["calling_ae"]) == ("calling_ae_not_recognised", "MODALITY")
    assert [job.calling_ae for job in node.jobs().values()] == ["PACS"]


def test_caller_from_an_address_it_is_not_pinned_to_is_rejected(
    node_factory: Callable[..., NodeProcess],
) -> None:
    node = node_factory(
        {"association": {"allowed_callers": [{"ae_title": "MODALITY", "host": "10.20.30.40"}]}}
    ).start()

    done = echoscu(node.port, calling_ae="MODALITY")

    assert "Calling AE Title Not Recognized" in done.stderr
    refusal = node.wait_for_log(lambda event: event.get("event") == "association_refused")
    assert refusal["reason"] == "calling_host_not_allowed"
    assert refusal["calling_host"] == "127.0.0.1"


def test_association_beyond_the_maximum_is_rejected_as_local_limit_exceeded(
    node_factory: Callable[..., NodeProcess],
) -> None:
    node = node_factory({"association": {"max_associations": 1}}).start()
    holder = AE(ae_title="HOLDER")
    holder.add_requested_context(Verification)
    held = holder.associate("127.0.0.1", node.port, ae_title="OSTEONODE")
    assert held.is_established

    while_full = echoscu(node.port)
    held.release()
    for _ in range(50):  # the released association's thread ends a moment after the release
        after = echoscu(node.port)
        if after.returncode == 0:
            break
        time.sleep(0.1)

    assert "Local Limit Exceeded" in while_full.stderr, while_full.stderr
    assert after.returncode == 0, after.stderr
    refusal = node.wait_for_log(lambda event: event.get("event") == "association_refused")
    assert refusal["reason"] == "too_many_associations"


def test_idle_connections_neither_lock_out_a_listed_caller_nor_stay_open(
    node_factory: Callable[..., NodeProcess], tmp_path: Path
) -> None:
    node = node_factory(
        {
            "association": {
                "allowed_callers": [{"ae_title": "MODALITY", "host": "127.0.0.1"}],
                "max_associations": 10,
                "request_timeout_s": 2.0,
            }
        }
    ).start()
    image = make_radiograph(tmp_path / "image.dcm")
    idle = [socket.create_connection(("127.0.0.1", node.port)) for _ in range(11)]
    try:
        started = time.monotonic()
        sent = storescu(node.port, [image], calling_ae="MODALITY")
        took = time.monotonic() - started
        for connection in idle:
            connection.settimeout(10)
        closed = [connection.recv(1) == b"" for connection in idle]
    finally:
        for connection in idle:
            connection.close()

    assert sent.returncode == 0 and "Received Store Response (Success)" in sent.stderr, sent.stderr
    assert took < 1.9, f"the sender waited {took:.1f} s behind idle connections"
    assert all(closed)
    assert not [e for e in node.log_events() if e.get("event") == "association_refused"]


def test_connections_beyond_the_pending_limit_are_closed_at_once(
    node_factory: Callable[..., NodeProcess],
) -> None:
    node = node_factory(
        {"association": {"max_pending_connections": 3, "request_timeout_s": 30.0}}
    ).start()
    waiting = [socket.create_connection(("127.0.0.1", node.port)) for _ in range(3)]
    try:
        with socket.create_connection(("127.0.0.1", node.port)) as excess:
            excess.settimeout(5)
            assert excess.recv(1) == b""
    finally:
        for connection in waiting:
            connection.close()
    refusal = node.wait_for_log(lambda event: event.get("event") == "connection_refused")
    assert refusal["reason"] == "too_many_pending_connections"

"""A PACS that stores a report but whose answer is lost: the delivery says so, and is not dead.

Between the node and a real Orthanc sits a loopback proxy that passes every byte on, except that
for the first associations it cuts both connections when Orthanc's answer to the C-STORE comes
back: Orthanc has stored the object, the node never hears so.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest
from test_delivery_orthanc import lumbar_film

from osteonode.store.tables import DeliveryState, EventKind

pytestmark = pytest.mark.orthanc

#: A-ASSOCIATE-AC and P-DATA-TF PDU types (PS3.8 section 9.3).
_P_DATA_TF = 0x04


class AnswerLosingProxy:
    """Forwards associations to ``target_port``; the first ``lose`` lose the peer's first answer."""

    def __init__(self, target_port: int, lose: int) -> None:
        self._target_port = target_port
        self._to_lose = lose
        self.lost = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                lose = self.lost < self._to_lose
            threading.Thread(target=self._relay, args=(client, lose), daemon=True).start()

    def _relay(self, client: socket.socket, lose: bool) -> None:
        server = socket.create_connection(("127.0.0.1", self._target_port))
        threading.Thread(target=self._pass_bytes, args=(client, server), daemon=True).start()
        try:
            while header := _read_exactly(server, 6):
                body = _read_exactly(server, int.from_bytes(header[2:6], "big"))
                if lose and header[0] == _P_DATA_TF:
                    with self._lock:
                        self.lost += 1
                    return
                client.sendall(header + body)
        except OSError:
            pass
        finally:
            for end in (client, server):
                end.close()

    @staticmethod
    def _pass_bytes(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self._listener.close()


def _read_exactly(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            return b""
        data += chunk
    return data


def test_a_lost_answer_is_unconfirmed_and_the_retry_that_the_pacs_recognises_is_sent(
    delivery_world, tmp_path: Path
) -> None:
    world = delivery_world()
    orthanc = world.orthanc.start()
    proxy = AnswerLosingProxy(orthanc.dicom_port, lose=2)
    world.config = world.config.model_copy(
        update={
            "destinations": {
                "pacs": world.config.destinations["pacs"].model_copy(update={"port": proxy.port})
            }
        }
    )
    try:
        world.start_node()
        film, study = lumbar_film(tmp_path / "spine.dcm")
        orthanc.post_instance(film)

        deliveries = world.wait_for_deliveries(
            lambda ds: len(ds) == 2 and all(d.state == DeliveryState.SENT for d in ds)
        )
    finally:
        proxy.close()

    assert proxy.lost == 2
    unconfirmed = world.delivery_events(EventKind.DELIVERY_UNCONFIRMED)
    assert len(unconfirmed) == 2
    assert all("it may have been stored" in event.details["error"] for event in unconfirmed)
    assert all(d.unconfirmed_at is not None and d.attempts == 2 for d in deliveries)
    assert not world.delivery_events(EventKind.DELIVERY_DEAD)
    # Stored once each: Orthanc recognised the second copy by its SOP Instance UID.
    assert len(world.wait_for_study(study, 3)) == 3


def test_a_delivery_whose_answers_are_always_lost_ends_maybe_sent_not_dead(
    delivery_world, tmp_path: Path
) -> None:
    world = delivery_world(destination={"max_attempts": 2})
    orthanc = world.orthanc.start()
    proxy = AnswerLosingProxy(orthanc.dicom_port, lose=1000)
    world.config = world.config.model_copy(
        update={
            "destinations": {
                "pacs": world.config.destinations["pacs"].model_copy(update={"port": proxy.port})
            }
        }
    )
    try:
        world.start_node()
        film, study = lumbar_film(tmp_path / "spine.dcm")
        orthanc.post_instance(film)

        deliveries = world.wait_for_deliveries(
            lambda ds: len(ds) == 2 and all(d.state == DeliveryState.MAYBE_SENT for d in ds)
        )
    finally:
        proxy.close()

    assert all(d.attempts == 2 for d in deliveries)
    assert len(world.delivery_events(EventKind.DELIVERY_MAYBE_SENT)) == 2
    assert not world.delivery_events(EventKind.DELIVERY_DEAD)
    assert len(world.wait_for_study(study, 3)) == 3

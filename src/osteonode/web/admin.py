"""What the admin page shows, read from the database, the configuration and the models folder.

The functions return plain frozen dataclasses so the page template never touches ORM objects and a
test can check the figures without parsing HTML.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from pydicom.uid import SecondaryCaptureImageStorage
from sqlalchemy import select
from sqlalchemy.orm import Session

from osteonode.config import NodeConfig, RoutingRule
from osteonode.store.deliveries import DeliveryListing, list_deliveries
from osteonode.store.history import ResultRecord, counts_by_state, delivery_counts_by_state
from osteonode.store.tables import Delivery, DeliveryState, Instance, Result

if TYPE_CHECKING:
    from osteonode.zoo import ModelCard

__all__ = ["AdminView", "ModelEntry", "RecentResult", "admin_view", "capture_delivery"]

#: How many of the newest results the page lists.
RECENT_RESULTS = 24


@dataclass(frozen=True)
class RecentResult:
    """One stored result and where its Secondary Capture is, if the node made one."""

    result: ResultRecord
    sop_instance_uid: str
    capture_delivery_id: int | None


@dataclass(frozen=True)
class ModelEntry:
    """A model folder, its card (or why it cannot load) and the pipelines configured to use it."""

    folder: str
    card: ModelCard | None
    problem: str | None
    used_by: tuple[str, ...]


@dataclass(frozen=True)
class AdminView:
    """Everything the admin page shows."""

    generated_at: datetime
    jobs: dict[str, int]
    deliveries: dict[str, int]
    recent: list[RecentResult]
    dead: list[DeliveryListing]
    models: list[ModelEntry]
    accepted_modalities: list[str]
    rules: list[RoutingRule]


def admin_view(session: Session, config: NodeConfig, now: datetime) -> AdminView:
    """Read what the admin page shows.

    Parameters
    ----------
    session
        Open session on the node's database.
    config
        The node configuration (routing rules, models folder, pipelines).
    now
        When the page is made (shown on it).
    """
    rows = session.execute(
        select(Result, Instance.sop_instance_uid)
        .join(Instance, Result.instance_id == Instance.id)
        .order_by(Result.id.desc())
        .limit(RECENT_RESULTS)
    ).all()
    captures = _capture_deliveries(session, [result.id for result, _ in rows])
    recent = [
        RecentResult(ResultRecord.from_row(result), uid, captures.get(result.id))
        for result, uid in rows
    ]
    return AdminView(
        generated_at=now,
        jobs=counts_by_state(session),
        deliveries=delivery_counts_by_state(session),
        recent=recent,
        dead=list_deliveries(session, states=[DeliveryState.DEAD]),
        models=_models(config),
        accepted_modalities=list(config.routing.accepted_modalities),
        rules=list(config.routing.rules),
    )


def _capture_deliveries(session: Session, result_ids: list[int]) -> dict[int, int]:
    """The first Secondary Capture delivery of each result (all of a result's share one file)."""
    if not result_ids:
        return {}
    found: dict[int, int] = {}
    for result_id, delivery_id in session.execute(
        select(Delivery.result_id, Delivery.id)
        .where(
            Delivery.result_id.in_(result_ids),
            Delivery.sop_class_uid == SecondaryCaptureImageStorage,
        )
        .order_by(Delivery.id)
    ):
        found.setdefault(result_id, delivery_id)
    return found


def capture_delivery(session: Session, delivery_id: int) -> Path | None:
    """The spool path of a Secondary Capture delivery's file; None if there is no such delivery."""
    delivery = session.get(Delivery, delivery_id)
    if delivery is None or delivery.sop_class_uid != SecondaryCaptureImageStorage:
        return None
    return Path(delivery.spool_path)


def _models(config: NodeConfig) -> list[ModelEntry]:
    # Imported here: the model zoo brings torch, which a receive-only process never needs otherwise.
    from osteonode.zoo import ModelCard, list_models

    users: dict[str, list[str]] = {}
    for name, settings in config.pipelines.items():
        if settings.enabled:
            users.setdefault(settings.model_name(name), []).append(name)
    return [
        ModelEntry(
            folder=folder.name,
            card=found if isinstance(found, ModelCard) else None,
            problem=None if isinstance(found, ModelCard) else str(found),
            used_by=tuple(users.get(folder.name, ())),
        )
        for folder, found in list_models(config.models.dir)
    ]

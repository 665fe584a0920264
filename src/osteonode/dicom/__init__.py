"""DICOM networking: the node's receiving service (``scp``) and, later, its sending side (``scu``)."""

from osteonode.dicom.scp import (
    AssociationRefusal,
    RefusalReason,
    StorageSCP,
    StoreStatus,
    check_association,
)

__all__ = [
    "AssociationRefusal",
    "RefusalReason",
    "StorageSCP",
    "StoreStatus",
    "check_association",
]

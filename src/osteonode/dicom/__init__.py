"""DICOM networking: the node's receiving service (``scp``), its admission policy (``admission``),
its sending side (``scu``) and DICOM TLS (``tls``)."""

from osteonode.dicom.admission import AssociationRefusal, RefusalReason, check_association
from osteonode.dicom.scp import StorageSCP, StoreStatus

__all__ = [
    "AssociationRefusal",
    "RefusalReason",
    "StorageSCP",
    "StoreStatus",
    "check_association",
]

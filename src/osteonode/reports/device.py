"""The node as the author of its reports: device observer and equipment identity."""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.uid import UID

from osteonode import __version__
from osteonode.reports.uids import device_uid

__all__ = ["MANUFACTURER", "MODEL_NAME", "DeviceInfo"]

#: Manufacturer (0008,0070) of every object the node writes, and of its device observer.
MANUFACTURER = "osteonode"
#: Manufacturer's Model Name (0008,1090) of the node.
MODEL_NAME = "osteonode"

#: Longest value of a Long String (LO), the VR of the names and versions below.
_LO_MAX = 64


@dataclass(frozen=True)
class DeviceInfo:
    """The node that wrote a report.

    Parameters
    ----------
    name : str
        Node name (``[node] name``), the Device Observer Name (TID 1004).
    uid : str
        Device Observer UID.
    software_version : str
        The node's software version (Software Versions, and the device observer's model name).

    Raises
    ------
    ValueError
        When a value is empty, too long for a Long String, or `uid` is not a valid UID.
    """

    name: str
    uid: str
    software_version: str

    def __post_init__(self) -> None:
        for attribute in ("name", "software_version"):
            value = getattr(self, attribute)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"DeviceInfo.{attribute} must be a non-empty string")
            if len(value) > _LO_MAX or "\\" in value:
                raise ValueError(
                    f"DeviceInfo.{attribute} must be at most {_LO_MAX} characters without '\\'"
                )
        if not isinstance(self.uid, str) or not UID(self.uid).is_valid:
            raise ValueError(f"DeviceInfo.uid is not a valid UID: {self.uid!r}")

    @classmethod
    def for_node(cls, name: str, software_version: str = __version__) -> DeviceInfo:
        """The identity of a node called `name`, with a UID derived from the name."""
        return cls(name=name, uid=device_uid(name), software_version=software_version)

    @property
    def observer_model_name(self) -> str:
        """The device observer's model name: the software and its version."""
        return f"{MODEL_NAME} {self.software_version}"[:_LO_MAX]

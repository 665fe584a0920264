"""When an output series was made: its Series Date and Time.

PACS and viewers sort and file series by Series Date/Time; without them Orthanc lists a series
under "?" and OHIF sorts it last. The node's series are made together with their one instance, so
the series' moment is the instance's content moment.
"""

from __future__ import annotations

import datetime

from pydicom.dataset import Dataset
from pydicom.valuerep import DA, TM

__all__ = ["series_date_time"]


def series_date_time(instance: Dataset, now: datetime.datetime | None = None) -> tuple[DA, TM]:
    """The Series Date and Time of the series holding `instance`.

    Parameters
    ----------
    instance : pydicom.dataset.Dataset
        The output object; its Content Date and Time are used when both are present.
    now : datetime.datetime or None
        The moment to use otherwise (default: the current local time).

    Returns
    -------
    tuple of (pydicom.valuerep.DA, pydicom.valuerep.TM)
        Series Date and Series Time.

    Raises
    ------
    TypeError
        When `instance` is not a Dataset or `now` is not a datetime.
    """
    if not isinstance(instance, Dataset):
        raise TypeError(f"instance must be a pydicom Dataset, not {type(instance).__name__}")
    if now is not None and not isinstance(now, datetime.datetime):
        raise TypeError(f"now must be a datetime or None, not {type(now).__name__}")
    date, time = instance.get("ContentDate"), instance.get("ContentTime")
    if date and time:
        return DA(date), TM(time)
    moment = datetime.datetime.now() if now is None else now
    return DA(moment.date()), TM(moment.time())

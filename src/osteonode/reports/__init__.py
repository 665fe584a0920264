"""Reports: a pipeline Result as the DICOM objects a radiologist sees.

``build_structured_report`` writes the TID 1500 Imaging Measurement Report (numbers, codes and
outlines); ``build_secondary_capture`` writes the picture with the answer burnt in. Both take
plain data and return pydicom datasets; neither knows about networking or torch.
"""

from osteonode.reports.capture import build_secondary_capture, render_result
from osteonode.reports.device import DeviceInfo
from osteonode.reports.sr import ReportError, build_structured_report
from osteonode.reports.text import banner_lines, summary_text
from osteonode.reports.uids import OutputKind, OutputUids, output_uids

__all__ = [
    "DeviceInfo",
    "OutputKind",
    "OutputUids",
    "ReportError",
    "banner_lines",
    "build_secondary_capture",
    "build_structured_report",
    "output_uids",
    "render_result",
    "summary_text",
]

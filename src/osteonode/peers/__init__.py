"""Real DICOM peers the node works with, run as local processes for the demo and the tests."""

from osteonode.peers.orthanc import Orthanc, OrthancError, OrthancModality

__all__ = ["Orthanc", "OrthancError", "OrthancModality"]

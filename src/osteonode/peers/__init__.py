"""Real DICOM peers the node works with, run as local processes for the demo and the tests."""

from osteonode.peers.orthanc import Orthanc, OrthancError, OrthancModality, free_port

__all__ = ["Orthanc", "OrthancError", "OrthancModality", "free_port"]

"""Training and fine-tuning of the pipelines' networks on a cohort (DICOM files + ground truth)."""

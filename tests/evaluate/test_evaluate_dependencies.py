"""The statistics module runs on numpy alone; scipy and scikit-learn are test oracles only."""

import subprocess
import sys


def test_metrics_import_neither_scipy_nor_scikit_learn():
    probe = (
        "import sys, osteonode.evaluate, osteonode.evaluate.metrics; "
        "print(sorted(m for m in ('scipy', 'sklearn') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"

"""A stand-in lumbar pipeline for delivery tests, and a node process that runs it.

The delivery tests check how results leave the node, not what the models say, so they must pass
before and after the real demo models land. The stand-in answers from the image header: a film whose
Image Comments say ``not evaluable`` gets a not-evaluable result with a reason, every other film is
osteoporotic with a T-score of minus its row count over 100, and a heat-map brightest in the middle.

Run as a script (``python delivery_standin.py CONFIG``) it is ``osteonode serve`` with this pipeline,
so a test can start, SIGTERM and restart a real node process without shipped models.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from osteonode.config import load_config
from osteonode.imaging.pixels import Radiograph
from osteonode.pipelines.base import Category, FindingSite, ModelIdentity, Result, SourceImage

STAND_IN_MODEL = ModelIdentity(
    "stand-in-lumbar", "1.0", "none", synthetic=True, diagnostic_use=False
)
NOT_EVALUABLE_COMMENT = "not evaluable"
NOT_EVALUABLE_REASON = "vertebrae L1-L4 not found"


class StandInLumbarPipeline:
    """Answers from the header; see the module docstring."""

    name = "lumbar"

    def run(self, radiograph: Radiograph) -> Result:
        rows, columns = radiograph.shape
        uids = radiograph.uids
        source = SourceImage(
            uids.sop_class_uid,
            uids.sop_instance_uid,
            uids.study_instance_uid,
            uids.series_instance_uid,
            rows,
            columns,
        )
        if str(radiograph.header.get("ImageComments", "")) == NOT_EVALUABLE_COMMENT:
            return Result(
                "lumbar",
                source,
                STAND_IN_MODEL,
                evaluable=False,
                site=FindingSite.LUMBAR_SPINE,
                reason=NOT_EVALUABLE_REASON,
            )
        y, x = np.mgrid[0:rows, 0:columns]
        heatmap = np.exp(-(((y - rows / 2) / rows) ** 2 + ((x - columns / 2) / columns) ** 2) * 8)
        return Result(
            "lumbar",
            source,
            STAND_IN_MODEL,
            evaluable=True,
            site=FindingSite.LUMBAR_SPINE,
            category=Category.OSTEOPOROSIS,
            t_score=-rows / 100,
            heatmap=heatmap.astype(np.float32),
        )


def main(config_path: str) -> None:
    from osteonode.logs import configure_logging
    from osteonode.service import run_node

    config = load_config(Path(config_path))
    configure_logging(config.logging)
    run_node(config, pipelines={"lumbar": StandInLumbarPipeline()})


if __name__ == "__main__":
    main(sys.argv[1])

"""The ``severstal`` command: one sub-command per stage, each a thin module of ``severstal.stages`` with ``main(argv)``.

``severstal STAGE ...``, ``python -m severstal STAGE ...`` and ``python -m severstal.stages.MODULE ...``
are the same thing. Stage modules are imported only when run, so commands that need no model
never import TensorFlow, and stages never import each other: what they share lives in ``infra``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

# stage name -> (module, one-line help); the order is the order run_all.sh runs them in.
STAGES: dict[str, tuple[str, str]] = {
    "download": ("severstal.stages.download", "fetch the competition data with the Kaggle API"),
    "demo-data": ("severstal.stages.demo_data", "write the embedded Severstal-like demo data set"),
    "smoke-data": ("severstal.stages.smoke_data", "copy a few images of a data directory for the smoke run"),
    "check-data": ("severstal.stages.check_data", "validate a data directory before training"),
    "folds": ("severstal.stages.folds", "make multilabel stratified folds (once, fixed seed)"),
    "eda": ("severstal.stages.eda", "draw data-exploration figures"),
    "weights": ("severstal.stages.weights", "fetch the encoders' ImageNet weights into the Keras cache"),
    "train": ("severstal.stages.train", "train a classifier or segmenter fold"),
    "oof": ("severstal.stages.oof", "compute out-of-fold statistics for a trained fold"),
    "tune": ("severstal.stages.tune", "search post-processing thresholds on out-of-fold statistics"),
    "predict": ("severstal.stages.predict", "ensemble the folds into submission.csv"),
    "validate": ("severstal.stages.validate", "check a submission file's format"),
    "score": ("severstal.stages.score", "score a submission against truth labels (mean Dice)"),
    "report": ("severstal.stages.report", "score the submission and what each post-processing step adds"),
    "show": ("severstal.stages.show", "draw predicted and true masks on images"),
    "merge": ("severstal.stages.merge", "join sharded predictions into one submission"),
    "kaggle-submit": ("severstal.stages.kaggle_submit", "submit a validated CSV to Kaggle"),
    "bundle": ("severstal.stages.bundle", "make an offline Kaggle-notebook bundle"),
    "export": ("severstal.stages.export", "export the fold ensemble as a SavedModel for an inspection line"),
    "config": ("severstal.stages.show_config", "print the resolved config, every key with its meaning"),
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        width = max(map(len, STAGES))
        lines = "\n".join(f"  {name:<{width}}  {text}" for name, (_, text) in STAGES.items())
        print(f"usage: severstal STAGE [options]   (severstal STAGE --help for a stage's options)\n\nstages:\n{lines}")
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from . import __version__

        print(__version__)
        return 0
    stage = argv[0]
    if stage not in STAGES:
        print(f"error: unknown stage {stage!r}; stages: {', '.join(STAGES)}", file=sys.stderr)
        return 2
    module = importlib.import_module(STAGES[stage][0])
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())

"""Severstal: Steel Defect Detection workflow.

The package is layered (docs/architecture.md): ``core`` (pure NumPy), ``infra`` (config, artifacts,
files, locks, figures), ``nn`` (everything that imports TensorFlow), ``kaggle`` (API and notebook
bundle), ``stages`` (one module per command of ``cli``). Importing the package never imports
TensorFlow; ``nn`` imports it through ``severstal.nn.tfsetup``, which sets ``TF_USE_LEGACY_KERAS``
and ``SM_FRAMEWORK`` first.

``from severstal import Predictor`` (the inspection line's API, ``nn.predictor``) loads TensorFlow, and only
TensorFlow, NumPy and OpenCV, when it is asked for.
"""

__version__ = "0.1.0"
__all__ = ["Predictor", "__version__"]


def __getattr__(name: str):
    if name == "Predictor":
        from .nn.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'severstal' has no attribute {name!r}")

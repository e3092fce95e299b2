"""Severstal: Steel Defect Detection workflow.

The package is layered (docs/architecture.md): ``core`` (pure NumPy), ``infra`` (config, artifacts,
files, locks, figures), ``nn`` (everything that imports TensorFlow), ``kaggle`` (API and notebook
bundle), ``stages`` (one module per command of ``cli``). Importing the package never imports
TensorFlow; ``nn`` imports it through ``severstal.nn.tfsetup``, which sets ``TF_USE_LEGACY_KERAS``
and ``SM_FRAMEWORK`` first.
"""

__version__ = "0.1.0"

"""Severstal: Steel Defect Detection workflow.

Importing the package never imports TensorFlow; the modules that need it import
``severstal.tfsetup`` first, which sets ``TF_USE_LEGACY_KERAS`` and ``SM_FRAMEWORK``.
"""

__version__ = "0.1.0"

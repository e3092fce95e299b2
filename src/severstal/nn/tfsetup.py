"""Import TensorFlow the way this project needs it: Keras 2 (tf-keras) and segmentation-models.

Every module that touches TensorFlow imports ``tf``, ``keras`` and ``sm`` from here, so the
environment variables are always set before the first TensorFlow import.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("SM_FRAMEWORK", "tf.keras")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import segmentation_models as sm  # noqa: E402  (prints its framework once)
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

__all__ = ["tf", "keras", "sm"]

"""Devices and precision: the ``hardware`` section applied to TensorFlow."""

from __future__ import annotations

from ..infra.schema import HardwareSection
from .tfsetup import keras, tf


def configure_hardware(hardware: HardwareSection):
    """Apply the ``hardware`` section: mixed precision and the distribution strategy.

    Returns:
        ``(strategy, description)``; build and compile models inside ``strategy.scope()``.
    """
    gpus = tf.config.list_physical_devices("GPU")
    mixed = bool(gpus) if hardware.mixed_precision == "auto" else bool(hardware.mixed_precision)
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    strategy = tf.distribute.MirroredStrategy() if hardware.distribute else tf.distribute.get_strategy()
    description = (f"{len(gpus)} GPU(s)" if gpus else "CPU") + (", mixed precision" if mixed else ", float32") + (
        ", XLA" if hardware.xla else "") + (
        f", MirroredStrategy over {strategy.num_replicas_in_sync}" if hardware.distribute else "")
    return strategy, description

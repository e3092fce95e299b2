"""Devices and precision: the ``hardware`` section applied to TensorFlow."""

from __future__ import annotations

import os

from ..infra.errors import UserError
from ..infra.schema import HardwareSection
from .tfsetup import keras, tf


def uses_mixed_precision(hardware: HardwareSection, gpus: list) -> bool:
    """Whether the models compute in float16: ``auto`` is on exactly when a GPU is visible."""
    return bool(gpus) if hardware.mixed_precision == "auto" else bool(hardware.mixed_precision)


def precision_name(hardware: HardwareSection) -> str:
    """``mixed_float16`` or ``float32``: the policy :func:`configure_hardware` sets on this machine."""
    return "mixed_float16" if uses_mixed_precision(hardware, tf.config.list_physical_devices("GPU")) else "float32"


def device_line(hardware: HardwareSection) -> str:
    """The first line of every stage that runs a model: TensorFlow's devices and the precision.

    Raises:
        UserError: ``hardware.require_gpu`` is true and TensorFlow sees no GPU; the message says how
            to install GPU support and how to run on the CPU anyway.
    """
    gpus = tf.config.list_physical_devices("GPU")
    if hardware.require_gpu and not gpus:
        hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
        why = (f"CUDA_VISIBLE_DEVICES={hidden!r} hides the GPUs" if hidden is not None and not hidden.strip("-1, ")
               else "no GPU, or a TensorFlow without GPU support")
        raise UserError(
            f"no GPU is visible to TensorFlow {tf.__version__} ({why}), and this config requires one "
            "(hardware.require_gpu: true, as the real recipe sets it: on a CPU its training takes days). "
            "Install GPU support: on a machine where nvidia-smi lists a GPU, `rm .venv/.installed` and run "
            "`bash run_tests.sh` or `bash run_all.sh` again, which install tensorflow[and-cuda] by themselves "
            "(docs/gpu.md). To run on the CPU anyway, add --set hardware.require_gpu=false.")
    names = [tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name) for gpu in gpus]
    devices = f"{len(gpus)} GPU(s) ({', '.join(names)})" if gpus else "CPU (no GPU visible)"
    precision = "mixed precision (float16 compute, float32 outputs)" if uses_mixed_precision(hardware, gpus) \
        else "float32"
    return f"TensorFlow {tf.__version__} on {devices}, {precision}"


def announce_devices(hardware: HardwareSection) -> None:
    """Print :func:`device_line` (the UserError of a missing required GPU propagates)."""
    print(device_line(hardware), flush=True)


def configure_hardware(hardware: HardwareSection):
    """Apply the ``hardware`` section: mixed precision and the distribution strategy.

    Returns:
        ``(strategy, description)``; build and compile models inside ``strategy.scope()``.
    """
    gpus = tf.config.list_physical_devices("GPU")
    mixed = uses_mixed_precision(hardware, gpus)
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    strategy = tf.distribute.MirroredStrategy() if hardware.distribute else tf.distribute.get_strategy()
    description = (f"{len(gpus)} GPU(s)" if gpus else "CPU") + (", mixed precision" if mixed else ", float32") + (
        ", XLA" if hardware.xla else "") + (
        f", MirroredStrategy over {strategy.num_replicas_in_sync}" if hardware.distribute else "")
    return strategy, description

"""The learning-rate schedule: linear warm-up, then cosine decay (or constant)."""

from __future__ import annotations

import math

from ..infra.schema import ClassifierSection, SegmenterSection
from .tfsetup import keras, tf


class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up, then cosine decay to ``final_fraction`` of the base rate (or constant).

    The rate depends only on the optimizer's step counter, so a resumed run continues the schedule.
    """

    def __init__(self, base_rate: float, warmup_steps: int, total_steps: int, cosine: bool = True,
                 final_fraction: float = 0.01):
        self.base_rate, self.warmup_steps, self.total_steps = float(base_rate), int(warmup_steps), int(total_steps)
        self.cosine, self.final_fraction = bool(cosine), float(final_fraction)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warmup = float(max(self.warmup_steps, 1))
        warm = self.base_rate * tf.minimum(1.0, (step + 1.0) / warmup)
        if not self.cosine:
            return warm
        progress = tf.clip_by_value((step - self.warmup_steps) / float(max(self.total_steps - self.warmup_steps, 1)),
                                    0.0, 1.0)
        factor = self.final_fraction + (1.0 - self.final_fraction) * 0.5 * (1.0 + tf.cos(math.pi * progress))
        return tf.where(step < self.warmup_steps, warm, self.base_rate * factor)

    def get_config(self):
        return {"base_rate": self.base_rate, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps,
                "cosine": self.cosine, "final_fraction": self.final_fraction}


def learning_rate_schedule(section: ClassifierSection | SegmenterSection, steps_per_epoch: int) -> WarmupCosine:
    """The schedule of a model section (``learning_rate``, ``schedule``, ``warmup_epochs``, ``epochs``)."""
    if section.schedule not in ("cosine", "constant"):
        raise ValueError(f"schedule must be 'cosine' or 'constant', got {section.schedule!r}")
    return WarmupCosine(section.learning_rate, section.warmup_epochs * steps_per_epoch,
                        section.epochs * steps_per_epoch, cosine=section.schedule == "cosine")

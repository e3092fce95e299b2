"""Everything that imports TensorFlow: models, losses, schedules, hardware, augmentation, the input pipeline,
callbacks, training, inference."""

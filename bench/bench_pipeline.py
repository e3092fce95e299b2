"""Training steps per second of a model fed by the real input pipeline vs. from tensors already in memory.

The pipeline reads the JPEGs, decodes the RLE masks and augments in parallel while the model trains;
the in-memory run trains the same model on batches taken from that pipeline beforehand and held
in memory. The ratio says how much training the input pipeline costs (target: >= 90%).

    .venv/bin/python bench/bench_pipeline.py --config configs/demo.yaml            # demo segmenter
    .venv/bin/python bench/bench_pipeline.py --config configs/demo.yaml --model cls --steps 20

Runs alternate (memory, pipeline, memory, pipeline, ...) and the median of each is reported, so
load from other processes on the machine affects both alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from severstal.core.labels import rle_lookup
from severstal.infra.artifacts import Paths
from severstal.infra.commands import add_config_arguments, config_from_args
from severstal.infra.images import image_names
from severstal.infra.tables import read_table


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    parser.add_argument("--model", choices=("seg", "cls"), default="seg")
    parser.add_argument("--steps", type=int, default=30, help="timed training steps per run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each kind")
    parser.add_argument("--out", help="also write the figures to this JSON file")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    from severstal.nn.hardware import configure_hardware
    from severstal.nn.models import build_model
    from severstal.nn.pipeline import input_spec, make_samples, training_dataset
    from severstal.nn.tfsetup import keras, tf
    from severstal.nn.training import compile_model

    section = config.model(args.model)
    paths = Paths(config)
    names = image_names(paths.train_images)
    if not names:
        print(f"error: no training images in {paths.train_images} (make the demo data first: "
              "severstal demo-data --config configs/demo.yaml)", file=sys.stderr)
        return 1
    lookup = rle_lookup(read_table(paths.train_labels))
    keras.utils.set_random_seed(config.seed)
    _, hardware = configure_hardware(config.hardware)
    spec = input_spec(config.data.height, config.data.width, section.scale)
    batch_size = section.batch_size
    pipeline, steps_per_epoch = training_dataset(make_samples(names, paths.train_images, lookup),
                                                 args.model, section, spec, config.seed, batch_size)
    batches = list(pipeline.take(args.steps))  # the same kind of batches, decoded and augmented beforehand
    images = tf.concat([x for x, _ in batches], axis=0)
    targets = tf.concat([y for _, y in batches], axis=0)
    memory = tf.data.Dataset.from_tensor_slices((images, targets)).batch(batch_size).repeat().prefetch(2)
    model = build_model(args.model, section)
    compile_model(model, args.model, section, steps_per_epoch, config.tune, jit_compile=config.hardware.xla)
    model.fit(memory, steps_per_epoch=3, epochs=1, verbose=0)  # trace the training step once

    class Timer(keras.callbacks.Callback):
        """Times the steps after the first ``warm`` ones (iterator start-up and worker threads excluded)."""

        warm = 3

        def on_train_batch_end(self, batch, logs=None):
            if batch == self.warm - 1:
                self.started = time.perf_counter()

        def on_train_end(self, logs=None):
            self.seconds = time.perf_counter() - self.started

    def rate(dataset) -> float:
        timer = Timer()
        model.fit(dataset, steps_per_epoch=Timer.warm + args.steps, epochs=1, verbose=0, callbacks=[timer])
        return args.steps / timer.seconds

    memory_rates, pipeline_rates = [], []
    for repeat in range(args.repeats):
        memory_rates.append(rate(memory))
        pipeline_rates.append(rate(pipeline))
        print(f"run {repeat + 1}: in memory {memory_rates[-1]:.2f} steps/s, pipeline {pipeline_rates[-1]:.2f} steps/s",
              flush=True)
    started = time.perf_counter()
    for _ in pipeline.take(args.steps):
        pass
    alone = args.steps / (time.perf_counter() - started)
    in_memory, streamed = statistics.median(memory_rates), statistics.median(pipeline_rates)
    result = {
        "model": args.model, "config": config.source, "data": str(paths.data_dir), "hardware": hardware,
        "batch_size": batch_size, "input_size": list(spec.size), "crop": section.crop, "steps": args.steps,
        "in_memory_steps_per_second": round(in_memory, 3), "pipeline_steps_per_second": round(streamed, 3),
        "pipeline_fraction_of_in_memory": round(streamed / in_memory, 3),
        "pipeline_alone_batches_per_second": round(alone, 2),
    }
    print(f"{args.model} on {hardware}, batch {batch_size}, images {spec.size[0]} x {spec.size[1]}, crop "
          f"{section.crop}: in memory {in_memory:.2f} steps/s, real pipeline {streamed:.2f} steps/s "
          f"= {100 * streamed / in_memory:.0f}% (target >= 90%); the pipeline alone delivers {alone:.1f} batches/s")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

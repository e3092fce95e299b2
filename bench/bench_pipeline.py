"""The training input pipeline: crops per second of the pipeline alone, and training fed by it vs. from memory.

``--measure alone`` (the default) times the real training stream (``nn.pipeline.training_dataset``:
reading the JPEGs, the masks, the defect-seeking crop, the augmentations, batching) with no model,
at the config's shapes, for the segmenter and the classifier: crops per second pinned to one core
(``taskset -c 0``) and on all cores, medians of ``--repeats`` runs, each in a fresh process. At the
real recipe's shapes (``configs/default.yaml``: full 256 x 1600 JPEGs, 256 x 512 segmenter crops,
224 x 1568 classifier crops) this says how many cores keep a GPU fed:

    .venv/bin/python bench/bench_pipeline.py --config configs/default.yaml --data data/demo

``--measure training`` trains the config's model on batches of the real pipeline and, alternately,
on batches taken from it beforehand and held in memory (the ratio says what the pipeline costs
training on a machine whose cores it shares):

    .venv/bin/python bench/bench_pipeline.py --config configs/demo.yaml --measure training
    .venv/bin/python bench/bench_pipeline.py --config configs/demo.yaml --measure training --model cls --steps 20

``--measure alone`` also runs from an older checkout's flat package (c8daa63, before the layered
package), so that both are measured side by side on one machine: run this file with that
checkout's interpreter from its directory.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

KINDS = ("seg", "cls")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/default.yaml", help="experiment config")
    parser.add_argument("--data", default=None, help="data directory in Kaggle's layout (default: the config's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--measure", choices=("alone", "training"), default="alone")
    parser.add_argument("--model", choices=(*KINDS, "both"), default=None,
                        help="alone: both (default); training: seg (default), cls or both (in one process)")
    parser.add_argument("--batches", type=int, default=40, help="alone: timed batches per run")
    parser.add_argument("--cores", choices=("one", "all", "both"), default="both",
                        help="alone: pinned to one core, on all cores, or both (default)")
    parser.add_argument("--steps", type=int, default=30, help="training: timed training steps per run")
    parser.add_argument("--warm", type=int, default=3, help="training: untimed steps before each timed run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each kind")
    parser.add_argument("--out", help="also write the figures to this JSON file")
    parser.add_argument("--worker", choices=KINDS, help=argparse.SUPPRESS)  # one timed run, JSON on stdout
    return parser


def stream(args, kind: str):
    """``(dataset, batch size, crop, description)``: the config's training stream for ``kind``.

    Works with this checkout's layered package and with the flat package of older checkouts.
    """
    try:
        from severstal.infra.artifacts import Paths
    except ModuleNotFoundError:  # an older checkout (c8daa63): severstal.config, severstal.pipeline
        from severstal.checks import image_names
        from severstal.config import load_config
        from severstal.labels import read_table, rle_lookup
        from severstal.pipeline import input_spec, make_samples, training_dataset

        config = load_config(args.config, args.overrides, args.data)
        section = config[kind]
        seed, image_dir = int(config["seed"]), config.data_dir / "train_images"
        height, width = int(config["data"]["height"]), int(config["data"]["width"])
        labels, scale, batch, crop = config.data_dir / "train.csv", float(section.get("scale", 1.0)), \
            int(section["batch_size"]), section.get("crop")
    else:
        from severstal.core.labels import rle_lookup
        from severstal.infra.config import load_config
        from severstal.infra.images import image_names
        from severstal.infra.tables import read_table
        from severstal.nn.pipeline import input_spec, make_samples, training_dataset

        config = load_config(args.config, args.overrides, args.data)
        section, paths = config.model(kind), Paths(config)
        seed, image_dir, labels = config.seed, paths.train_images, paths.train_labels
        height, width, scale, batch, crop = config.data.height, config.data.width, section.scale, \
            section.batch_size, section.crop
    names = image_names(image_dir)
    if not names:
        raise SystemExit(f"error: no training images in {image_dir}: give --data DIR (e.g. the demo data: "
                         "severstal demo-data, then --data data/demo)")
    spec = input_spec(height, width, scale)
    samples = make_samples(names, image_dir, rle_lookup(read_table(labels)))
    dataset, _ = training_dataset(samples, kind, section, spec, seed, batch)
    return dataset, batch, crop, f"{len(names)} images of {height} x {width} in {image_dir}"


def time_alone(args, kind: str) -> dict:
    """One run of the stream alone: crops per second over ``args.batches`` batches after a warm-up."""
    dataset, batch, crop, data = stream(args, kind)
    iterator = iter(dataset)
    for _ in range(5):  # worker threads started, file cache warm
        next(iterator)
    started = time.perf_counter()
    for _ in range(args.batches):
        next(iterator)
    seconds = time.perf_counter() - started
    return {"kind": kind, "crops_per_second": args.batches * batch / seconds, "batch_size": batch,
            "crop": list(crop) if crop else None, "data": data, "cores": len(os.sched_getaffinity(0))}


def run_worker(args, kind: str, pinned: bool) -> dict:
    """:func:`time_alone` in a fresh process, pinned to core 0 or on every core."""
    command = [sys.executable, __file__, "--config", args.config, "--batches", str(args.batches), "--worker", kind]
    command += ["--data", args.data] if args.data else []
    for override in args.overrides:
        command += ["--set", override]
    if pinned:
        command = ["taskset", "-c", "0", *command]
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
    if done.returncode != 0:
        raise SystemExit(f"error: the {kind} pipeline run failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_alone(args) -> dict:
    if args.cores != "all" and shutil.which("taskset") is None:
        raise SystemExit("error: taskset (util-linux) is needed to pin a run to one core")
    kinds = KINDS if args.model in (None, "both") else (args.model,)
    result = {"config": args.config, "data": args.data, "repeats": args.repeats, "batches": args.batches}
    rows = []
    for kind in kinds:
        for pinned in {"one": (True,), "all": (False,), "both": (True, False)}[args.cores]:
            runs = [run_worker(args, kind, pinned) for _ in range(args.repeats)]
            rate = statistics.median(run["crops_per_second"] for run in runs)
            cores = runs[0]["cores"]
            label = f"{kind} {'one core' if pinned else f'{cores} cores'}"
            result[f"{kind}_{'one_core' if pinned else 'all_cores'}_crops_per_second"] = round(rate, 1)
            rows.append((label, runs[0]["crop"], runs[0]["batch_size"], rate, rate / cores,
                         [round(run["crops_per_second"], 1) for run in runs]))
            print(f"{label}: {rate:.1f} crops/s (runs {rows[-1][-1]}); {runs[0]['data']}", flush=True)
    print("\n| pipeline | crop | batch | crops/s | crops/s per core |\n|---|---|---:|---:|---:|")
    for label, crop, batch, rate, per_core, _ in rows:
        shown = f"{crop[0]} x {crop[1]}" if crop else "whole image"
        print(f"| {label} | {shown} | {batch} | {rate:.1f} | {per_core:.1f} |")
    return result


def measure_training(args) -> dict:
    """Training steps per second of the config's models fed by the pipeline vs. from memory (alternating runs).

    Returns:
        ``{kind: figures}`` for each model measured (``--model``: seg by default, or cls, or both in one process).
    """
    from severstal.infra.config import load_config
    from severstal.nn.hardware import configure_hardware
    from severstal.nn.tfsetup import keras

    config = load_config(args.config, args.overrides, args.data)
    _, hardware = configure_hardware(config.hardware)
    kinds = KINDS if args.model == "both" else (args.model or "seg",)
    results = {}
    for kind in kinds:
        keras.utils.set_random_seed(config.seed)
        results[kind] = {"model": kind, "config": args.config, "hardware": hardware,
                         **training_rates(args, config, kind, hardware)}
    return results


def training_rates(args, config, kind: str, hardware: str) -> dict:
    """Medians of ``args.repeats`` alternating timed fits of ``kind``'s model: in memory, then the real pipeline."""
    from severstal.nn.models import build_model
    from severstal.nn.tfsetup import keras, tf
    from severstal.nn.training import compile_model

    section = config.model(kind)
    pipeline, batch_size, crop, data = stream(args, kind)
    batches = list(pipeline.take(args.steps))  # the same kind of batches, decoded and augmented beforehand
    images = tf.concat([x for x, _ in batches], axis=0)
    targets = tf.concat([y for _, y in batches], axis=0)
    # drop_remainder: the pipeline's static batch shape, so both streams share one traced training step
    memory = tf.data.Dataset.from_tensor_slices((images, targets)).batch(batch_size, drop_remainder=True)
    memory = memory.repeat().prefetch(2)
    model = build_model(kind, section)
    compile_model(model, kind, section, args.steps, config.tune, config.data.num_classes,
                  jit_compile=config.hardware.xla)
    warm = max(1, args.warm)

    class Timer(keras.callbacks.Callback):
        """Times the steps after the first ``warm`` ones (tracing, iterator start-up and worker threads excluded)."""

        def on_train_batch_end(self, batch, logs=None):
            if batch == warm - 1:
                self.started = time.perf_counter()

        def on_train_end(self, logs=None):
            self.seconds = time.perf_counter() - self.started

    def rate(dataset) -> float:
        timer = Timer()
        model.fit(dataset, steps_per_epoch=warm + args.steps, epochs=1, verbose=0, callbacks=[timer])
        return args.steps / timer.seconds

    memory_rates, pipeline_rates = [], []
    for repeat in range(args.repeats):
        memory_rates.append(rate(memory))
        pipeline_rates.append(rate(pipeline))
        print(f"{kind} run {repeat + 1}: in memory {memory_rates[-1]:.2f} steps/s, pipeline "
              f"{pipeline_rates[-1]:.2f} steps/s", flush=True)
    in_memory, streamed = statistics.median(memory_rates), statistics.median(pipeline_rates)
    print(f"{kind} on {hardware}, batch {batch_size}, crop {crop}, {data}: in memory {in_memory:.2f} steps/s, real "
          f"pipeline {streamed:.2f} steps/s = {100 * streamed / in_memory:.0f}% of in memory", flush=True)
    return {"batch_size": batch_size, "crop": list(crop) if crop else None, "steps": args.steps,
            "in_memory_steps_per_second": round(in_memory, 3), "pipeline_steps_per_second": round(streamed, 3),
            "pipeline_fraction_of_in_memory": round(streamed / in_memory, 3)}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.worker:
        print(json.dumps(time_alone(args, args.worker)))
        return 0
    result = measure_alone(args) if args.measure == "alone" else measure_training(args)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

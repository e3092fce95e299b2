"""Search per-class post-processing thresholds on the out-of-fold statistics of all folds.

Reads ``models/<experiment>/seg/fold<K>/oof.npz`` (and ``cls/fold<K>/oof.npz`` when the
classifier's exist) for every fold, tunes each class's classifier threshold, pixel threshold,
minimum component size and minimum area on the ``tune`` grid of the config, and writes
``models/<experiment>/thresholds.json`` (docs/thresholds-format.md) plus one heatmap per class in
``reports/<experiment>/``. Prints the tuned, untuned and held-out-fold scores per class, ending
with ``cv_mean_dice``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from ..cli import UserError, add_config_arguments, config_from_args, run_main
from ..core.constants import CLASS_IDS
from ..core.oofstats import OOFStatistics, combine_folds, load_classifier_oof, load_segmentation_oof
from ..core.postprocess import DEFAULT_THRESHOLDS, ClassThresholds
from ..core.thresholds import SearchGrid, SearchResult, search_thresholds, thresholds_from_document
from ..infra.config import Config, ConfigError, config_differences

FORMAT_VERSION = 1
CONFIG_SECTIONS = ("tune", "folds")  # what the thresholds depend on besides the OOF files
MODEL_NAMES = {"seg": "segmenter", "cls": "classifier"}


def grid_from_config(config: Config) -> SearchGrid:
    """The search grid of ``config["tune"]`` (UserError when it is unusable)."""
    try:
        grid = SearchGrid.from_dict(config.get("tune") or {})
    except (TypeError, ValueError) as error:
        raise UserError(f"the config's tune section is not a usable grid: {error}") from None
    if DEFAULT_THRESHOLDS.pixel_threshold not in grid.pixel_thresholds or 0 not in grid.min_component_sizes:
        raise UserError("tune.pixel_thresholds must include 0.5 and tune.min_component_sizes must include 0: "
                        "the untuned default (0.5, no component removal) is scored for comparison")
    return grid


def oof_paths(config: Config, model: str) -> dict[int, Path]:
    """``{fold: models/<experiment>/<model>/fold<K>/oof.npz}`` for folds 0..k-1."""
    folds = config.get("folds.k")
    if not isinstance(folds, int) or folds < 1:
        raise UserError(f"folds.k must be a positive integer, got {folds!r}")
    return {fold: config.fold_dir(model, fold) / "oof.npz" for fold in range(folds)}


def missing_folds_message(model: str, missing: dict[int, Path]) -> str:
    folds = ", ".join(str(fold) for fold in missing)
    listing = "\n  ".join(str(path) for path in missing.values())
    return (f"no out-of-fold {MODEL_NAMES[model]} statistics for fold(s) {folds}:\n  {listing}\n"
            f"Train them with `severstal train --model {model} --fold K` and compute their statistics with "
            f"`severstal oof --model {model} --fold K` (same --config/--set options), then run tune again.")


def find_inputs(config: Config) -> tuple[dict[int, Path], dict[int, Path] | None]:
    """The segmentation files of every fold and the classifier's (None when there are none at all)."""
    segmentation, classifier = oof_paths(config, "seg"), oof_paths(config, "cls")
    missing = {fold: path for fold, path in segmentation.items() if not path.is_file()}
    if missing:
        raise UserError(missing_folds_message("seg", missing))
    missing = {fold: path for fold, path in classifier.items() if not path.is_file()}
    if len(missing) == len(classifier):
        return segmentation, None
    if missing:
        raise UserError(missing_folds_message("cls", missing)
                        + " (Or delete every cls oof.npz to tune without a classifier gate.)")
    return segmentation, classifier


def fingerprint(path: Path) -> str:
    """``sha256:<hex>`` of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def load_inputs(
    segmentation: dict[int, Path], classifier: dict[int, Path] | None, grid: SearchGrid
) -> OOFStatistics:
    """Read and join all folds' files, checking each against its fold number and the grid."""
    def read(model: str, fold: int, path: Path, loader):
        try:
            part = loader(path)
        except ValueError as error:
            raise UserError(f"{error}\nRecompute it with `severstal oof --model {model} --fold {fold} --force`.") \
                from None
        if part["fold"] != fold:
            raise UserError(f"{path} holds the statistics of fold {part['fold']}, not fold {fold}: recompute it with "
                            f"`severstal oof --model {model} --fold {fold} --force`")
        if model == "seg" and not grid.matches(part["pixel_thresholds"], part["min_component_sizes"]):
            raise UserError(
                f"{path} was computed on pixel thresholds {part['pixel_thresholds'].tolist()} and component sizes "
                f"{part['min_component_sizes'].tolist()}, but the config's tune section asks for "
                f"{list(grid.pixel_thresholds)} and {list(grid.min_component_sizes)}. Recompute it with "
                f"`severstal oof --model seg --fold {fold} --force`, or restore the grid.")
        return part

    seg_parts = [read("seg", fold, path, load_segmentation_oof) for fold, path in segmentation.items()]
    cls_parts = None if classifier is None else [
        read("cls", fold, path, load_classifier_oof) for fold, path in classifier.items()]
    try:
        return combine_folds(seg_parts, cls_parts)
    except ValueError as error:
        raise UserError(f"the out-of-fold statistics do not fit together: {error}. Recompute them with "
                        "`severstal oof ... --force` after checking that every fold used the same folds file.") \
            from None


def load_oof(config: Config) -> OOFStatistics:
    """All folds' OOF statistics of an experiment, checked against its config (UserError when unusable)."""
    segmentation, classifier = find_inputs(config)
    return load_inputs(segmentation, classifier, grid_from_config(config))


def thresholds_document(result: SearchResult, config: Config, folds: int, inputs: dict[str, str]) -> dict:
    """The content of thresholds.json (docs/thresholds-format.md)."""
    def by_class(values: list[ClassThresholds]) -> dict:
        return {str(class_id): setting.to_dict() for class_id, setting in zip(CLASS_IDS, values, strict=True)}

    def score(value) -> float | None:
        return None if value is None else round(float(value), 8)

    heldout = result.heldout_per_class
    return {
        "format_version": FORMAT_VERSION,
        "experiment": config.experiment,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "classes": by_class(result.thresholds),
        "cv_mean_dice": score(result.tuned_mean),
        "default_mean_dice": score(result.default_mean),
        "heldout_mean_dice": score(result.heldout_mean),
        "per_class": {
            str(class_id): {"tuned_dice": score(result.tuned_per_class[channel]),
                            "default_dice": score(result.default_per_class[channel]),
                            "heldout_dice": None if heldout is None else score(heldout[channel]),
                            "positives": int(result.positives[channel])}
            for channel, class_id in enumerate(CLASS_IDS)},
        "heldout_per_fold": {str(fold): score(value) for fold, value in result.heldout_per_fold.items()},
        "heldout_thresholds": {str(fold): by_class(values) for fold, values in result.heldout_thresholds.items()},
        "classifier_gate": result.gated,
        "images": result.images,
        "folds": folds,
        "grid": result.grid.to_dict(),
        "default_thresholds": DEFAULT_THRESHOLDS.to_dict(),
        "inputs": inputs,
        "config": config.raw,
    }


def write_text_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def draw_heatmap(result: SearchResult, channel: int, path: Path) -> None:
    """Class Dice over (pixel threshold x minimum area), each cell the best over component size and gate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid, chosen = result.grid, result.thresholds[channel]
    table = result.score_tables[channel].max(axis=(1, 3))  # (P, A)
    figure, axes = plt.subplots(figsize=(12, 4.5))
    image = axes.imshow(table, aspect="auto", origin="lower", cmap="viridis")
    axes.set_xticks(range(len(grid.min_areas)), [str(area) for area in grid.min_areas], rotation=90)
    axes.set_yticks(range(len(grid.pixel_thresholds)), [f"{value:.2f}" for value in grid.pixel_thresholds])
    axes.set_xlabel("minimum area (pixels)")
    axes.set_ylabel("pixel threshold")
    axes.plot(grid.min_areas.index(chosen.min_area), grid.pixel_thresholds.index(chosen.pixel_threshold),
              marker="*", markersize=16, color="red", markeredgecolor="white")
    axes.set_title(
        f"class {CLASS_IDS[channel]}: mean Dice, best over component size and classifier threshold\n"
        f"chosen (*): pixel {chosen.pixel_threshold:.2f}, component {chosen.min_component_size}, "
        f"area {chosen.min_area}, classifier {chosen.classifier_threshold:.2f}; "
        f"tuned {result.tuned_per_class[channel]:.4f}, default {result.default_per_class[channel]:.4f}")
    figure.colorbar(image, ax=axes, label="class mean Dice")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(buffer.getvalue())
    os.replace(temporary, path)


def heatmap_path(config: Config, class_id: int) -> Path:
    return config.reports_dir / f"thresholds_class{class_id}.png"


def report(result: SearchResult) -> str:
    """The per-class table and the final ``cv_mean_dice`` line."""
    header = (f"{'class':<6}{'positives':>10}{'classifier':>11}{'pixel':>7}{'component':>10}{'min_area':>9}"
              f"{'tuned':>10}{'default':>10}{'held-out':>10}")
    lines = [header]
    heldout = result.heldout_per_class
    for channel, class_id in enumerate(CLASS_IDS):
        setting = result.thresholds[channel]
        held = "-" if heldout is None else f"{heldout[channel]:.6f}"
        lines.append(f"{class_id:<6}{result.positives[channel]:>10}{setting.classifier_threshold:>11.2f}"
                     f"{setting.pixel_threshold:>7.2f}{setting.min_component_size:>10}{setting.min_area:>9}"
                     f"{result.tuned_per_class[channel]:>10.6f}{result.default_per_class[channel]:>10.6f}{held:>10}")
    held = "-" if result.heldout_mean is None else f"{result.heldout_mean:.6f}"
    lines.append(f"{'mean':<6}{result.positives.sum():>10}{'':>37}{result.tuned_mean:>10.6f}"
                 f"{result.default_mean:>10.6f}{held:>10}")
    if result.heldout_per_fold:
        folds = ", ".join(f"fold {fold} {value:.6f}" for fold, value in result.heldout_per_fold.items())
        lines.append(f"held-out (each fold scored with thresholds tuned on the other folds): {folds}")
    lines.append(f"cv_mean_dice {result.tuned_mean:.6f}")
    return "\n".join(lines)


def up_to_date(path: Path, config: Config, inputs: dict[str, str]) -> bool:
    """Whether thresholds.json was made from these inputs with this config (ConfigError when the config differs)."""
    try:
        saved = json.loads(path.read_text())
        thresholds_from_document(saved)
    except (OSError, ValueError):
        print(f"{path} is unreadable: tuning again")
        return False
    differences = config_differences(saved.get("config") or {}, config.raw, CONFIG_SECTIONS)
    if differences:
        listing = "\n  ".join(differences[:20])
        raise ConfigError(f"the thresholds in {path} were tuned with a different config:\n  {listing}\n"
                          "Re-run with --force to tune again with the current config, or use another experiment "
                          "name (--experiment NAME) to keep both.")
    if saved.get("inputs") != inputs:
        print("the out-of-fold statistics changed since the thresholds were tuned: tuning again")
        return False
    return True


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="severstal tune", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    parser.add_argument("--force", action="store_true", help="tune again even when thresholds.json is up to date")
    return parser


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    grid = grid_from_config(config)
    segmentation, classifier = find_inputs(config)
    paths = list(segmentation.values()) + list((classifier or {}).values())
    inputs = {path.as_posix(): fingerprint(path) for path in paths}
    target = config.thresholds_path
    if target.is_file() and not args.force and up_to_date(target, config, inputs):
        saved = json.loads(target.read_text())
        print(f"{target} is up to date (use --force to tune again)")
        print(f"cv_mean_dice {saved['cv_mean_dice']:.6f}")
        return 0
    stats = load_inputs(segmentation, classifier, grid)
    if classifier is None:
        print(f"no classifier out-of-fold statistics ({config.fold_dir('cls', 0).parent}/fold*/oof.npz): "
              "tuning without a classifier gate")
    print(f"tuning on {stats.count} images from {len(segmentation)} folds, grid {grid.shape} "
          "(pixel thresholds x component sizes x minimum areas x classifier thresholds)")
    result = search_thresholds(stats, grid)
    document = thresholds_document(result, config, len(segmentation), inputs)
    write_text_atomically(target, json.dumps(document, indent=2) + "\n")
    for channel, class_id in enumerate(CLASS_IDS):
        draw_heatmap(result, channel, heatmap_path(config, class_id))
    print(f"wrote {target} and heatmaps {heatmap_path(config, 1).parent}/thresholds_class[1-4].png")
    print(report(result))
    return 0


def main(argv=None) -> int:
    return run_main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())

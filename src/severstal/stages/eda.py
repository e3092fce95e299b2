"""Draw data-exploration figures of the training set into ``reports/<experiment>/eda/``.

Figures: defect-free vs defective images, classes per image, class combinations, images per
class, mask area per class (log scale) and a few example images per class with their masks.
Images are opened only for the examples. A finished set with the same config is not redrawn.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from ..cli import add_config_arguments, config_from_args, run_main
from ..core.constants import CLASS_COLOURS_RGB, CLASS_IDS
from ..core.labels import masks_for, non_empty, rle_lookup
from ..core.rle import area
from ..core.splits import PRESENCE_COLUMNS
from ..infra.config import ConfigError, check_saved_config, save_config
from ..infra.figures import legend_handles, overlay_masks
from .folds import load_training_labels

CONFIG_SECTIONS = ("data", "seed")  # what the figures depend on
SUMMARY_FIGURES = ("defect_free_vs_defective", "classes_per_image", "class_combinations", "images_per_class",
                   "mask_area_per_class")
EXAMPLES_PER_CLASS = 3
NEUTRAL = "0.55"  # grey for bars that are not one class


# ---- statistics (pure) ---------------------------------------------------------------------

def classes_per_image(presence: pd.DataFrame) -> pd.Series:
    """Number of images with 0, 1, 2, 3 and 4 defect classes (index 0..4)."""
    counts = presence[PRESENCE_COLUMNS].sum(axis=1).value_counts()
    return counts.reindex(range(len(CLASS_IDS) + 1), fill_value=0)


def class_combinations(presence: pd.DataFrame) -> pd.Series:
    """Images per combination of classes, most common first; index like ``"3"``, ``"1+3"``, ``"none"``."""
    has = presence[PRESENCE_COLUMNS].to_numpy().astype(bool)  # (images, 4)
    names = ["+".join(str(c) for c, present in zip(CLASS_IDS, row, strict=True) if present) or "none"
             for row in has]
    counts = pd.Series(names).value_counts()
    return counts.sort_index(kind="stable").sort_values(ascending=False, kind="stable")


def mask_areas(labels: pd.DataFrame, image_ids: Iterable[str]) -> dict[int, np.ndarray]:
    """``{class id: mask areas in pixels}`` of the non-empty masks of ``image_ids``."""
    masks = non_empty(labels)
    masks = masks[masks["ImageId"].isin(set(image_ids))]
    return {class_id: np.array([area(rle) for rle in masks.loc[masks["ClassId"] == class_id, "EncodedPixels"]],
                               dtype=np.int64)
            for class_id in CLASS_IDS}


def choose_examples(presence: pd.DataFrame, class_id: int, count: int, seed: int) -> list[str]:
    """Up to ``count`` images showing ``class_id``, drawn reproducibly, in name order."""
    candidates = sorted(presence.loc[presence[f"has_{class_id}"] == 1, "ImageId"])
    if len(candidates) <= count:
        return candidates
    rng = np.random.default_rng([seed, class_id])
    return sorted(rng.choice(candidates, count, replace=False).tolist())


# ---- figures (pure: data in, matplotlib Figure out) ----------------------------------------

def _bar_figure(labels: list[str], values: list[int], colours, title: str, xlabel: str,
                width: float = 6.0) -> Figure:
    """A bar chart with each bar's count and share written above it."""
    figure = Figure(figsize=(width, 4.0), layout="constrained")
    axes = figure.subplots()
    bars = axes.bar(labels, values, color=colours, edgecolor="black", linewidth=0.5)
    total = max(sum(values), 1)
    axes.bar_label(bars, labels=[f"{v:,}\n{100 * v / total:.1f}%" for v in values], fontsize=8)
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel("images")
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.margins(y=0.2)
    return figure


def figure_defect_free_vs_defective(presence: pd.DataFrame) -> Figure:
    defective = int((presence[PRESENCE_COLUMNS].sum(axis=1) > 0).sum())
    return _bar_figure(["defect-free", "defective"], [len(presence) - defective, defective], [NEUTRAL, "tab:red"],
                       f"Defect-free vs defective images ({len(presence):,} images)", "")


def figure_classes_per_image(presence: pd.DataFrame) -> Figure:
    counts = classes_per_image(presence)
    return _bar_figure([str(n) for n in counts.index], counts.tolist(), NEUTRAL,
                       "Defect classes per image", "classes present in the image")


def figure_class_combinations(presence: pd.DataFrame) -> Figure:
    counts = class_combinations(presence)
    return _bar_figure(counts.index.tolist(), counts.tolist(), NEUTRAL, "Class combinations",
                       "classes present together", width=max(6.0, 0.7 * len(counts)))


def figure_images_per_class(presence: pd.DataFrame) -> Figure:
    counts = [int(presence[column].sum()) for column in PRESENCE_COLUMNS]
    return _bar_figure([f"class {c}" for c in CLASS_IDS], counts, CLASS_COLOURS_RGB,
                       f"Images per class (of {len(presence):,}; % of all masks)", "")


def figure_mask_areas(areas: dict[int, np.ndarray], num_pixels: int) -> Figure:
    """Log-scale histograms of mask area, one panel per class."""
    figure = Figure(figsize=(10.0, 6.5), layout="constrained")
    bins = np.logspace(0, np.log10(num_pixels), 41)
    for axes, class_id in zip(figure.subplots(2, 2).ravel(), CLASS_IDS, strict=True):
        values = areas[class_id]
        axes.hist(values, bins=bins, color=CLASS_COLOURS_RGB[class_id - 1], edgecolor="black", linewidth=0.3)
        axes.set_xscale("log")
        axes.set_xlim(1, num_pixels)
        axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
        if len(values):
            median = float(np.median(values))
            axes.axvline(median, color="black", linestyle="--", linewidth=1)
            axes.set_title(f"class {class_id}: {len(values):,} masks, median {median:,.0f} px")
        else:
            axes.set_title(f"class {class_id}: no masks")
        axes.set_xlabel("mask area (pixels, log scale)")
        axes.set_ylabel("masks")
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    figure.suptitle(f"Mask area per class (image = {num_pixels:,} pixels)")
    return figure


def figure_examples(class_id: int, examples: list[tuple[str, np.ndarray, tuple[int, ...]]]) -> Figure:
    """Example images of one class with every class's masks drawn on them.

    Args:
        class_id: the class the examples were chosen for.
        examples: ``(image id, overlaid RGB image (H, W, 3), classes present)`` per example.
    """
    height, width = examples[0][1].shape[:2]
    panel_height = 14.0 * height / width
    figure = Figure(figsize=(14.0, (panel_height + 0.45) * len(examples) + 0.5), layout="constrained")
    for axes, (image_id, overlaid, present) in zip(np.atleast_1d(figure.subplots(len(examples), 1)), examples,
                                                   strict=True):
        axes.imshow(overlaid, interpolation="nearest")
        axes.set_title(f"{image_id}: classes {', '.join(map(str, present))}", fontsize=9, loc="left")
        axes.set_axis_off()
    figure.suptitle(f"Class {class_id} examples (fill and outline: true masks)")
    figure.legend(handles=legend_handles(), loc="outside lower center", ncols=len(CLASS_IDS), fontsize=9)
    return figure


# ---- the stage ------------------------------------------------------------------------------

def save_figure(figure: Figure, path: Path, dpi: int = 100) -> None:
    """Write a PNG atomically (a temporary file, then a rename)."""
    temporary = path.with_name(path.name + ".tmp")
    FigureCanvasAgg(figure)  # render with Agg whatever the session's default backend is
    figure.savefig(temporary, format="png", dpi=dpi)
    os.replace(temporary, path)


def example_panels(data_dir: Path, image_ids: list[str], rles: dict[str, dict[int, str]]):
    """``(image id, overlaid RGB image, classes present)`` for the images that can be read."""
    panels = []
    for image_id in image_ids:
        image = cv2.imread(str(data_dir / "train_images" / image_id), cv2.IMREAD_COLOR)  # (H, W, 3) BGR
        if image is None:
            print(f"warning: cannot read {image_id}: left out of the examples", file=sys.stderr)
            continue
        try:
            masks = masks_for(rles.get(image_id, {}), image.shape[:2])  # (H, W, 4)
        except ValueError as error:
            print(f"warning: a mask of {image_id} is malformed ({error}): left out of the examples", file=sys.stderr)
            continue
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        present = tuple(sorted(rles.get(image_id, {})))
        panels.append((image_id, overlay_masks(rgb, masks, channel_order="rgb"), present))
    return panels


def expected_figures(presence: pd.DataFrame) -> list[str]:
    """File names of the figures for this training set."""
    examples = [f"examples_class_{c}.png" for c in CLASS_IDS if presence[f"has_{c}"].any()]
    return [f"{name}.png" for name in SUMMARY_FIGURES] + examples


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="severstal eda", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    parser.add_argument("--force", action="store_true", help="redraw even when the figures are up to date")
    return parser


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    out_dir = config.reports_dir / "eda"
    labels, presence = load_training_labels(config.data_dir)
    names = expected_figures(presence)
    if not args.force and all((out_dir / name).is_file() for name in names):
        try:
            if check_saved_config(out_dir, config, CONFIG_SECTIONS, "the EDA figures"):
                print(f"eda: {len(names)} figures in {out_dir} are up to date")
                return 0
        except ConfigError:
            print(f"eda: the config changed since {out_dir} was drawn: redrawing")
    num_pixels = int(config["data"]["height"]) * int(config["data"]["width"])
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = {
        "defect_free_vs_defective": figure_defect_free_vs_defective(presence),
        "classes_per_image": figure_classes_per_image(presence),
        "class_combinations": figure_class_combinations(presence),
        "images_per_class": figure_images_per_class(presence),
        "mask_area_per_class": figure_mask_areas(mask_areas(labels, presence["ImageId"]), num_pixels),
    }
    for name, figure in figures.items():
        save_figure(figure, out_dir / f"{name}.png")
    rles = rle_lookup(labels)
    for class_id in CLASS_IDS:
        chosen = choose_examples(presence, class_id, EXAMPLES_PER_CLASS, int(config.get("seed", 0)))
        panels = example_panels(config.data_dir, chosen, rles)
        if panels:
            save_figure(figure_examples(class_id, panels), out_dir / f"examples_class_{class_id}.png")
    save_config(config, out_dir)
    defective = int((presence[PRESENCE_COLUMNS].sum(axis=1) > 0).sum())
    print(f"eda: {len(presence):,} training images, {defective:,} with a defect "
          f"({100 * defective / len(presence):.1f}%); figures in {out_dir}:")
    for path in sorted(out_dir.glob("*.png")):
        print(f"  {path.name}")
    return 0


def main(argv=None) -> int:
    return run_main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())

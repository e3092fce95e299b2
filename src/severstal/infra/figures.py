"""Every PNG figure of the workflow, and the one way they are saved.

Builders take data and return a matplotlib ``Figure`` (no pyplot state, no display); :func:`save_figure`
renders it with the Agg backend and writes it atomically. Each class has one colour everywhere
(``core.constants.CLASS_COLOURS_RGB``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator

from ..core.constants import CLASS_COLOURS_RGB, CLASS_IDS
from .files import atomic_path

NEUTRAL = "0.55"  # grey for bars that are not one class


def save_figure(figure: Figure, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Render ``figure`` with Agg and write it as a PNG atomically; returns ``path``."""
    path = Path(path)
    FigureCanvasAgg(figure)  # whatever the session's default backend is
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=dpi)
    return path


def class_label(class_id: int, names: Sequence[str] | None = None) -> str:
    """``class 2`` or, when the class has a name other than its number, ``class 2 (dent)``."""
    name = names[class_id - 1] if names is not None and class_id <= len(names) else None
    return f"class {class_id}" if name in (None, str(class_id)) else f"class {class_id} ({name})"


def legend_handles(class_ids: Sequence[int] = CLASS_IDS, names: Sequence[str] | None = None) -> list[Patch]:
    """Legend entries ``class N`` (with the class's name, if any) in each class's colour."""
    return [Patch(facecolor=CLASS_COLOURS_RGB[class_id - 1], label=class_label(class_id, names))
            for class_id in class_ids]


# ----------------------------------------------------------------------------- training

def training_curves(history: pd.DataFrame, metric: str) -> Figure:
    """``curves.png``: loss and ``metric`` per epoch, training and validation, best epochs starred."""
    figure = Figure(figsize=(10, 3.8), layout="tight")
    for axis, name in zip(figure.subplots(1, 2), ("loss", metric), strict=True):
        for key, style in ((name, "-o"), (f"val_{name}", "-s")):
            if key in history:
                axis.plot(history["epoch"], history[key], style, label=key, markersize=4)
        if "best" in history and f"val_{name}" in history:
            best = history[history["best"] == 1]
            axis.plot(best["epoch"], best[f"val_{name}"], "k*", markersize=9, label="best epoch so far")
        axis.set_xlabel("epoch")
        axis.set_title(name)
        axis.grid(alpha=0.3)
        axis.legend()
    return figure


def confusion_matrices(summary: dict, groups: Sequence[str], title: str) -> Figure:
    """``confusion.png``: one 2 x 2 confusion matrix per group (class, "any defect") of a classification summary."""
    figure = Figure(figsize=(3.2 * len(groups), 3.4), layout="tight")
    for axis, group in zip(np.atleast_1d(figure.subplots(1, len(groups))), groups, strict=True):
        counts = summary[group]
        matrix = np.array([[counts["true_negative"], counts["false_positive"]],
                           [counts["false_negative"], counts["true_positive"]]])
        axis.imshow(matrix, cmap="Blues")
        for (row, column), value in np.ndenumerate(matrix):
            axis.text(column, row, str(value), ha="center", va="center",
                      color="white" if value > matrix.max() / 2 else "black")
        axis.set_xticks([0, 1], ["no", "yes"])
        axis.set_yticks([0, 1], ["no", "yes"])
        axis.set_xlabel("predicted")
        axis.set_ylabel("true")
        f1 = counts["f1"]
        axis.set_title(f"{group}\nF1 {'n/a' if f1 is None or np.isnan(f1) else f'{f1:.2f}'}")
    figure.suptitle(title)
    return figure


def label_confusion(matrix: Sequence[Sequence[int]], names: Sequence[str], title: str) -> Figure:
    """A single-label confusion matrix (rows true, columns predicted), counts and row shares in the cells."""
    matrix = np.asarray(matrix)
    size = max(3.6, 1.1 * len(names) + 1.8)
    figure = Figure(figsize=(size, size * 0.9), layout="tight")
    axis = figure.subplots()
    totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    axis.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (row, column), value in np.ndenumerate(matrix):
        axis.text(column, row, f"{value}\n{shares[row, column]:.0%}", ha="center", va="center",
                  color="white" if shares[row, column] > 0.5 else "black")
    axis.set_xticks(range(len(names)), names, rotation=30, ha="right")
    axis.set_yticks(range(len(names)), names)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(title)
    return figure


def threshold_heatmap(table: np.ndarray, pixel_thresholds: Sequence[float], min_areas: Sequence[int],
                      chosen: tuple[float, int], title: str) -> Figure:
    """A class's mean Dice over (pixel threshold x minimum area), the chosen setting starred.

    Args:
        table: (P, A) class mean Dice, each cell the best over the other axes.
        pixel_thresholds: (P,) the rows.
        min_areas: (A,) the columns.
        chosen: ``(pixel threshold, minimum area)`` of the tuned setting.
        title: the figure's title.
    """
    figure = Figure(figsize=(12, 4.5), layout="tight")
    axes = figure.subplots()
    image = axes.imshow(table, aspect="auto", origin="lower", cmap="viridis")
    axes.set_xticks(range(len(min_areas)), [str(area) for area in min_areas], rotation=90)
    axes.set_yticks(range(len(pixel_thresholds)), [f"{value:.2f}" for value in pixel_thresholds])
    axes.set_xlabel("minimum area (pixels)")
    axes.set_ylabel("pixel threshold")
    axes.plot(list(min_areas).index(chosen[1]), list(pixel_thresholds).index(chosen[0]),
              marker="*", markersize=16, color="red", markeredgecolor="white")
    axes.set_title(title)
    figure.colorbar(image, ax=axes, label="class mean Dice")
    return figure


def operating_points_figure(curves: Sequence[dict], title: str) -> Figure:
    """Image-level precision against recall, one panel per class: every setting tried (dots), their Pareto
    front (line), the chosen setting (star) and a recall objective's target (dashed line).

    Args:
        curves: per class ``{"label": "class 1", "recall": (U,), "precision": (U,), "front": (U,) bool,
            "chosen": (recall, precision) or None, "target": R or None}`` (``core.classification
            .precision_recall_points``); a class with no points gets a note instead.
        title: the figure's title.
    """
    columns = min(2, len(curves))
    rows = -(-len(curves) // columns)
    figure = Figure(figsize=(5.2 * columns, 4.2 * rows + 0.5), layout="constrained")
    axes = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).ravel()
    for axis in axes[len(curves):]:
        axis.set_axis_off()
    for index, (axis, curve) in enumerate(zip(axes, curves, strict=False)):
        colour = CLASS_COLOURS_RGB[index % len(CLASS_COLOURS_RGB)]
        recall, precision, front = (np.asarray(curve[key]) for key in ("recall", "precision", "front"))
        axis.set_title(curve["label"])
        axis.set_xlim(-0.02, 1.02)
        axis.set_ylim(-0.02, 1.02)
        axis.set_xlabel("recall (images with the class where it is found)")
        axis.set_ylabel("precision (found images that have it)")
        axis.grid(alpha=0.3)
        if not recall.size:
            axis.text(0.5, 0.5, "no image has this class", ha="center", va="center", transform=axis.transAxes)
            continue
        axis.scatter(recall, precision, s=6, color=NEUTRAL, alpha=0.4, label="settings")
        axis.plot(recall[front], precision[front], "-o", color=colour, markersize=3, label="Pareto front")
        if curve.get("target") is not None:
            axis.axvline(curve["target"], color="black", linestyle="--", linewidth=1,
                         label=f"target recall {curve['target']:g}")
        if curve.get("chosen") is not None:
            axis.plot(*curve["chosen"], marker="*", markersize=16, color="red", markeredgecolor="black",
                      linestyle="none", label="chosen")
        axis.legend(loc="lower left", fontsize=8)
    figure.suptitle(title)
    return figure


# ----------------------------------------------------------------------------- predictions

def prediction_figure(panels: Sequence[tuple[str, np.ndarray]], title: str, class_ids: Sequence[int] = CLASS_IDS,
                      names: Sequence[str] | None = None) -> Figure:
    """Image panels stacked (prediction, truth), each with a caption, a title and a class legend.

    Args:
        panels: ``(caption, (H, W, 3) RGB uint8)`` per panel.
        title: the figure's title (image id and score).
        class_ids: classes in the legend.
        names: the class names (legend), in class-number order.
    """
    height, width = panels[0][1].shape[:2]
    figure_width = 16.0 if width >= 3 * height else 10.0  # strips across the page, plates narrower
    panel_height = figure_width * height / width
    figure = Figure(figsize=(figure_width, len(panels) * (panel_height + 0.45) + 0.6))
    axes = figure.subplots(len(panels), 1, squeeze=False)
    for axis, (caption, picture) in zip(axes[:, 0], panels, strict=True):
        axis.imshow(picture, interpolation="nearest")
        axis.set_title(caption, fontsize=10, loc="left")
        axis.set_axis_off()
    figure.suptitle(title, fontsize=11, x=0.01, ha="left")
    figure.legend(handles=legend_handles(class_ids, names), loc="upper right", ncol=len(class_ids), fontsize=9,
                  frameon=False)
    figure.tight_layout(rect=(0, 0, 1, 0.97))
    return figure


def image_grid(items: Sequence[tuple[np.ndarray, str]], title: str, columns: int = 4) -> Figure:
    """Images in a grid, each with a caption (e.g. the predicted and true class of a folders data set)."""
    rows = max(1, -(-len(items) // columns))
    figure = Figure(figsize=(3.2 * columns, 3.4 * rows + 0.4), layout="tight")
    axes = np.atleast_2d(figure.subplots(rows, columns, squeeze=False))
    for axis in axes.flat:
        axis.set_axis_off()
    for axis, (picture, caption) in zip(axes.flat, items, strict=False):
        axis.imshow(picture, interpolation="nearest")
        axis.set_title(caption, fontsize=9)
    figure.suptitle(title, fontsize=11)
    return figure


# ----------------------------------------------------------------------------- data exploration

def bar_figure(labels: list[str], values: list[int], colours, title: str, xlabel: str, width: float = 6.0) -> Figure:
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


def mask_area_histograms(areas: dict[int, np.ndarray], num_pixels: int) -> Figure:
    """Log-scale histograms of mask area, one panel per class."""
    class_ids = sorted(areas)
    rows = int(np.ceil(len(class_ids) / 2))
    figure = Figure(figsize=(10.0, 3.25 * rows), layout="constrained")
    bins = np.logspace(0, np.log10(num_pixels), 41)
    for axes, class_id in zip(np.atleast_1d(figure.subplots(rows, 2)).ravel(), class_ids, strict=False):
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


def example_figure(class_id: int, examples: list[tuple[str, np.ndarray, tuple[int, ...]]],
                   class_ids: Sequence[int] = CLASS_IDS) -> Figure:
    """Example images of one class with every class's masks drawn on them.

    Args:
        class_id: the class the examples were chosen for.
        examples: ``(image id, overlaid RGB image (H, W, 3), classes present)`` per example.
        class_ids: classes in the legend.
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
    figure.legend(handles=legend_handles(class_ids), loc="outside lower center", ncols=len(class_ids), fontsize=9)
    return figure

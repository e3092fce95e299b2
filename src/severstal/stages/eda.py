"""Draw data-exploration figures of the training set into ``reports/<experiment>/eda/``.

Figures: defect-free vs defective images, classes per image, class combinations, images per
class, mask area per class (log scale) and a few example images per class with their masks.
Images are opened only for the examples (chosen with a fixed seed, so training seeds do not change
them). Figures drawn for the same image size from the same labels are kept.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from ..core.constants import CLASS_COLOURS_RGB
from ..core.drawing import overlay_masks
from ..core.labels import choose_examples, class_combinations, classes_per_image, mask_areas, masks_for, rle_lookup
from ..core.splits import presence_columns_of
from ..infra import locks
from ..infra.artifacts import CONFIG_FILE, EDA_KEYS, LOCKS, STAMP_FILE, Paths
from ..infra.commands import add_config_arguments, config_from_args, run_main
from ..infra.data import training_set
from ..infra.figures import NEUTRAL, bar_figure, example_figure, image_grid, mask_area_histograms, save_figure
from ..infra.files import text_sha256, write_atomically
from ..infra.stamps import Action, Stamp, decide, read_stamp, write_stamp

SUMMARY_FIGURES = ("defect_free_vs_defective", "classes_per_image", "class_combinations", "images_per_class",
                   "mask_area_per_class")
EXAMPLES_PER_CLASS = 3
EXAMPLES_SEED = 0


def summary_figures(labels, presence, num_pixels: int) -> dict:
    """``{figure name: Figure}`` of the training set's statistics."""
    columns = presence_columns_of(presence)
    class_ids = [int(column[4:]) for column in columns]
    defective = int((presence[columns].sum(axis=1) > 0).sum())
    per_image = classes_per_image(presence, class_ids)
    combinations = class_combinations(presence, class_ids)
    return {
        "defect_free_vs_defective": bar_figure(["defect-free", "defective"], [len(presence) - defective, defective],
                                               [NEUTRAL, "tab:red"],
                                               f"Defect-free vs defective images ({len(presence):,} images)", ""),
        "classes_per_image": bar_figure([str(n) for n in per_image.index], per_image.tolist(), NEUTRAL,
                                        "Defect classes per image", "classes present in the image"),
        "class_combinations": bar_figure(combinations.index.tolist(), combinations.tolist(), NEUTRAL,
                                         "Class combinations", "classes present together",
                                         width=max(6.0, 0.7 * len(combinations))),
        "images_per_class": bar_figure([f"class {c}" for c in class_ids], [int(presence[c].sum()) for c in columns],
                                       [CLASS_COLOURS_RGB[c - 1] for c in class_ids],
                                       f"Images per class (of {len(presence):,}; % of all masks)", ""),
        "mask_area_per_class": mask_area_histograms(mask_areas(labels, presence["ImageId"], class_ids), num_pixels),
    }


def example_panels(image_dir: Path, image_ids: list[str], rles: dict[str, dict[int, str]], num_classes: int):
    """``(image id, overlaid RGB image, classes present)`` for the images that can be read."""
    panels = []
    for image_id in image_ids:
        image = cv2.imread(str(image_dir / image_id), cv2.IMREAD_COLOR)  # (H, W, 3) BGR
        if image is None:
            print(f"warning: cannot read {image_id}: left out of the examples", file=sys.stderr)
            continue
        try:
            masks = masks_for(rles.get(image_id, {}), image.shape[:2], num_classes)  # (H, W, classes)
        except ValueError as error:
            print(f"warning: a mask of {image_id} is malformed ({error}): left out of the examples", file=sys.stderr)
            continue
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        present = tuple(sorted(rles.get(image_id, {})))
        panels.append((image_id, overlay_masks(rgb, masks, channel_order="rgb"), present))
    return panels


def folder_figures(image_dir: Path, presence: pd.DataFrame, names: list[str]) -> dict:
    """The folders layout's figures: images per class and a grid of examples of each class."""
    columns = presence_columns_of(presence)
    counts = [int(presence[column].sum()) for column in columns]
    figures = {"images_per_class": bar_figure(names, counts, [CLASS_COLOURS_RGB[i] for i in range(len(names))],
                                              f"Training images per class ({len(presence):,} images)", "class")}
    for number, (column, name) in enumerate(zip(columns, names, strict=True), start=1):
        chosen = choose_examples(presence, number, EXAMPLES_PER_CLASS, EXAMPLES_SEED)
        items = [(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), Path(image_id).name) for image_id in chosen
                 if (image := cv2.imread(str(image_dir / image_id), cv2.IMREAD_COLOR)) is not None]
        if items:
            figures[f"examples_class_{column[4:]}"] = image_grid(items, f"class {number} ({name}): examples")
    return figures


def expected_figures(presence: pd.DataFrame, folders: bool = False) -> list[str]:
    """File names of the figures for this training set."""
    if folders:
        return ["images_per_class.png"] + [f"examples_class_{column[4:]}.png" for column in
                                           presence_columns_of(presence) if presence[column].any()]
    examples = [f"examples_class_{column[4:]}.png" for column in presence_columns_of(presence)
                if presence[column].any()]
    return [f"{name}.png" for name in SUMMARY_FIGURES] + examples


def labels_digest(labels: pd.DataFrame, presence: pd.DataFrame) -> str:
    """A fingerprint of the training labels and image list the figures show."""
    text = labels.sort_values(["ImageId", "ClassId"]).to_csv(index=False) + "\n".join(presence["ImageId"])
    return f"sha256:{text_sha256(text)}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="severstal eda", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    parser.add_argument("--force", action="store_true", help="redraw even when the figures are up to date")
    return parser


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    paths = Paths(config)
    out_dir = paths.eda
    labels, presence = training_set(paths)
    folders = paths.layout == "folders"
    names = expected_figures(presence, folders)
    with locks.hold(paths.reports / LOCKS, "eda", f"the EDA figures of {config.experiment_name}"):
        current = Stamp.of(config, EDA_KEYS, {"training labels": labels_digest(labels, presence)})
        previous = read_stamp(out_dir / STAMP_FILE) if all((out_dir / name).is_file() for name in names) else None
        decision = decide(f"eda: {out_dir} ({len(names)} figures)", previous, current, args.force)
        if decision.action is Action.SKIP:
            print(decision.note)
            return 0
        if decision.note:
            print(decision.note)
        columns = presence_columns_of(presence)
        if folders:
            figures = folder_figures(paths.train_images, presence, list(config.data.classes))
        else:
            figures = summary_figures(labels, presence, int(np.prod(config.data.shape)))
        for name, figure in figures.items():
            save_figure(figure, out_dir / f"{name}.png")
        rles = rle_lookup(labels, config.data.class_ids)
        for column in ([] if folders else columns):
            class_id = int(column[4:])
            chosen = choose_examples(presence, class_id, EXAMPLES_PER_CLASS, EXAMPLES_SEED)
            panels = example_panels(paths.train_images, chosen, rles, len(columns))
            if panels:
                save_figure(example_figure(class_id, panels, [int(c[4:]) for c in columns]),
                            out_dir / f"examples_class_{class_id}.png")
        write_atomically(out_dir / CONFIG_FILE, config.to_yaml())
        write_stamp(out_dir / STAMP_FILE, current)
    defective = int((presence[columns].sum(axis=1) > 0).sum())
    if folders:
        print(f"eda: {len(presence):,} training images in {len(columns)} classes; figures in {out_dir}:")
    else:
        print(f"eda: {len(presence):,} training images, {defective:,} with a defect "
              f"({100 * defective / len(presence):.1f}%); figures in {out_dir}:")
    for path in sorted(out_dir.glob("*.png")):
        print(f"  {path.name}")
    return 0


def main(argv=None) -> int:
    return run_main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())

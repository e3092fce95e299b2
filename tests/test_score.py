"""The score stage: hand-made files in both layouts, clear errors, and agreement with an
independent NumPy implementation on perturbed real masks."""

import numpy as np
import pandas as pd
import pytest

from severstal.core.constants import CLASS_IDS, HEIGHT, WIDTH
from severstal.core.metric import score_pairs
from severstal.core.rle import encode
from severstal.infra.tables import read_table
from severstal.stages import score


def write_csv(path, rows, layout):
    """Rows ``(image, class, rle)`` as a CSV in the long (submission column order) or legacy layout."""
    frame = pd.DataFrame(rows, columns=["ImageId", "ClassId", "EncodedPixels"])
    if layout == "long":
        frame[["ImageId", "EncodedPixels", "ClassId"]].to_csv(path, index=False)
    else:
        pd.DataFrame({
            "ImageId_ClassId": frame["ImageId"] + "_" + frame["ClassId"].astype(str),
            "EncodedPixels": frame["EncodedPixels"],
        }).to_csv(path, index=False)
    return path


SUBMISSION = [
    ("a.jpg", 1, "1 4"),  # truth "3 4": Dice 2*2/8 = 0.5
    ("a.jpg", 3, ""),  # truth "1 10": missed, 0; class 2 and 4 of a.jpg: missing rows, empty/empty = 1
    ("b.jpg", 0, "1 409600"),  # ClassId 0 ignored: b.jpg predicts nothing
    ("c.jpg", 4, "100 20"),  # truth empty: false positive, 0
]
TRUTH = [("a.jpg", 1, "3 4"), ("a.jpg", 3, "1 10"), ("b.jpg", 2, "7 3"), ("z.jpg", 1, "1 5")]
# pairs: a 0.5 1 0 1 | b 1 0 1 1 | c 1 1 1 0  -> 8.5 / 12


@pytest.mark.parametrize("submission_layout", ["long", "legacy"])
@pytest.mark.parametrize("truth_layout", ["long", "legacy"])
def test_score_by_hand_in_both_layouts(tmp_path, capsys, submission_layout, truth_layout):
    submission = SUBMISSION if submission_layout == "long" else [row for row in SUBMISSION if row[1] != 0]
    if submission_layout == "legacy":  # the legacy layout has no ClassId 0: b.jpg gets an empty row
        submission = [*submission, ("b.jpg", 1, "")]
    sub_path = write_csv(tmp_path / "sub.csv", submission, submission_layout)
    truth_path = write_csv(tmp_path / "truth.csv", TRUTH, truth_layout)
    assert score.main([str(sub_path), "--truth", str(truth_path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == f"mean_dice {8.5 / 12:.6f}" == "mean_dice 0.708333"
    rows = {line.split()[0] + (" " + line.split()[1] if line.startswith("class") else ""): line.split()
            for line in lines[2:-1]}
    assert rows["class 1"][2:] == ["0.833333", "3", "1", "0", "0"]  # (0.5 + 1 + 1) / 3
    assert rows["class 2"][2:] == ["0.666667", "3", "1", "0", "1"]
    assert rows["class 3"][2:] == ["0.666667", "3", "1", "0", "1"]
    assert rows["class 4"][2:] == ["0.666667", "3", "0", "1", "0"]
    assert rows["all"][1:] == ["0.708333", "12", "3", "1", "2"]
    assert lines[0].startswith("scored 3 images (12 image/class pairs)")


@pytest.mark.parametrize(
    ("submission", "truth", "message"),
    [
        (None, TRUTH, "submission {tmp}/sub.csv does not exist"),
        (SUBMISSION, None, "truth file {tmp}/truth.csv does not exist"),
        ([("a.jpg", 1, "5 2 1 2")], TRUTH, "line 2: invalid EncodedPixels for a.jpg: RLE runs are unsorted"),
        ([("a.jpg", 7, "")], TRUTH, "line 2: ClassId '7' is not one of 0-4"),
        ([("a.jpg", 1, "1 2"), ("a.jpg", 1, "")], TRUTH, "line 3: duplicate row for (a.jpg, class 1)"),
        ([("a.jpg", 1, "1 2")], [("a.jpg", 1, "1 2 3")], "truth mask of a.jpg class 1: RLE has an odd number"),
        ([("a.jpg", 1, "1 2")], [("a.jpg", 1, "1 2"), ("a.jpg", 1, "")], "truth has more than one row"),
        ([("a.jpg", 1, "1 2")], "ImageId,Label\na.jpg,1\n", "cannot read the truth file"),
        ("a,b\n1,2\n", TRUTH, "header is a,b: expected ImageId,EncodedPixels,ClassId"),
        ("", TRUTH, "is empty (not even a header)"),
    ],
)
def test_bad_files_give_one_clear_error(tmp_path, capsys, submission, truth, message):
    for name, content in (("sub.csv", submission), ("truth.csv", truth)):
        if isinstance(content, str):
            (tmp_path / name).write_text(content)
        elif content is not None:
            write_csv(tmp_path / name, content, "long")
    assert score.main([str(tmp_path / "sub.csv"), "--truth", str(tmp_path / "truth.csv")]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and "Traceback" not in captured.err
    assert message.format(tmp=tmp_path) in captured.err
    assert "mean_dice" not in captured.out


def test_images_missing_from_the_truth_are_defect_free_with_a_warning(tmp_path, capsys):
    sub_path = write_csv(tmp_path / "sub.csv", [("new.jpg", 2, "")], "long")
    truth_path = write_csv(tmp_path / "truth.csv", TRUTH, "long")
    assert score.main([str(sub_path), "--truth", str(truth_path)]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip().endswith("mean_dice 1.000000")
    assert "none of the 1 submission images appear in" in captured.err


# ---- agreement with an independent implementation on real masks ---------------------------

def simple_decode(rle: str) -> np.ndarray:
    """Written separately from severstal.rle: loop over runs, column-major reshape."""
    flat = np.zeros(HEIGHT * WIDTH, dtype=bool)
    values = [int(token) for token in rle.split()]
    for start, length in zip(values[0::2], values[1::2], strict=True):
        flat[start - 1:start - 1 + length] = True
    return flat.reshape((HEIGHT, WIDTH), order="F")


def simple_dice(predicted: np.ndarray, true: np.ndarray) -> float:
    total = predicted.sum() + true.sum()
    return 1.0 if total == 0 else 2.0 * np.logical_and(predicted, true).sum() / total


def perturb(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A plausible prediction of a true mask: kept, shifted, eroded, dilated or dropped."""
    action = rng.choice(["keep", "shift", "erode", "dilate", "drop"], p=[0.15, 0.35, 0.2, 0.15, 0.15])
    if action == "shift":
        return np.roll(mask, (int(rng.integers(-20, 21)), int(rng.integers(-60, 61))), axis=(0, 1))
    if action in ("erode", "dilate"):
        combine = np.logical_and if action == "erode" else np.logical_or
        result = mask.copy()
        for axis in (0, 1):
            for step in (-3, 3):
                result = combine(result, np.roll(mask, step, axis=axis))
        return result
    return mask if action == "keep" else np.zeros_like(mask)


def test_score_agrees_with_an_independent_implementation_on_real_masks(sample_dir, tmp_path, capsys):
    truth_frame = pd.read_csv(sample_dir / "train_subset_rle.csv")
    all_images = pd.read_csv(sample_dir / "train_subset_images.csv")["ImageId"]
    rng = np.random.default_rng(2019)
    defective = rng.choice(sorted(truth_frame["ImageId"].unique()), 240, replace=False)
    clean = rng.choice(sorted(set(all_images) - set(truth_frame["ImageId"])), 60, replace=False)
    images = sorted([*defective, *clean])
    true_rle = {(r.ImageId, r.ClassId): r.EncodedPixels for r in truth_frame.itertuples()}
    by_class = {c: truth_frame.loc[truth_frame["ClassId"] == c, "EncodedPixels"].tolist() for c in CLASS_IDS}
    rows, expected = [], []
    for image in images:
        written = len(rows)
        for class_id in CLASS_IDS:
            true = simple_decode(true_rle.get((image, class_id), ""))
            if true.any():
                predicted = perturb(true, rng)
            elif rng.random() < 0.08:  # a false positive: another image's mask of this class
                predicted = simple_decode(by_class[class_id][int(rng.integers(len(by_class[class_id])))])
            else:
                predicted = np.zeros_like(true)
            if predicted.any() or rng.random() < 0.5:  # empty predictions are written or left out
                rows.append((image, class_id, encode(predicted)))
            expected.append(simple_dice(predicted, true))
        if len(rows) == written:  # every image needs a row to be scored: a ClassId 0 row, as Kaggle's sample
            rows.append((image, 0, "1 409600"))
    sub_path = write_csv(tmp_path / "sub.csv", rows, "long")
    assert score.main([str(sub_path), "--truth", str(sample_dir / "train_subset_rle.csv")]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    independent = float(np.mean(expected))
    partial = sum(0 < value < 1 for value in expected)
    assert partial > 100 and 0.5 < independent < 0.95  # the perturbations are neither trivial nor hopeless
    assert last.startswith("mean_dice ")
    assert float(last.split()[1]) == pytest.approx(independent, abs=1e-6)
    pairs = score_pairs(read_table(sub_path), read_table(sample_dir / "train_subset_rle.csv"))
    assert pairs["ImageId"].tolist() == [image for image in images for _ in CLASS_IDS]
    np.testing.assert_allclose(pairs["dice"], expected, rtol=0, atol=1e-12)

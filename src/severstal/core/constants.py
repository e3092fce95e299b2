"""Competition constants and repository-relative default paths (the one place for both)."""

HEIGHT = 256
WIDTH = 1600
NUM_PIXELS = HEIGHT * WIDTH  # 409,600: the largest valid RLE end
NUM_CLASSES = 4
CLASS_IDS = (1, 2, 3, 4)  # ids in files; channel index = class id - 1

REAL_DATA_DIR = "data/severstal-steel-defect-detection"
DEMO_DATA_DIR = "data/demo"
COMPETITION = "severstal-steel-defect-detection"

# Files of a trained fold (models/<experiment>/<cls|seg>/fold<K>/) that later stages read.
BEST_WEIGHTS = "best.weights.h5"
FINISHED = "training.json"  # written last by the train stage: the fold's training is complete

# Official data-set sizes, used to verify a Kaggle download.
NUM_TRAIN_IMAGES = 12568
NUM_TEST_IMAGES = 5506

# The two CSV layouts Kaggle has used for labels and submissions.
LONG_COLUMNS = ("ImageId", "ClassId", "EncodedPixels")  # train.csv since 2019-10
SUBMISSION_COLUMNS = ("ImageId", "EncodedPixels", "ClassId")  # sample_submission.csv
LEGACY_COLUMNS = ("ImageId_ClassId", "EncodedPixels")  # the 2019 layout

CLASS_COLOURS_BGR = ((0, 200, 255), (255, 128, 0), (60, 60, 255), (0, 220, 0))
CLASS_COLOURS_RGB = tuple(tuple(c / 255 for c in reversed(bgr)) for bgr in CLASS_COLOURS_BGR)


def class_index(class_id: int) -> int:
    """Channel index (0..3) of a class id (1..4)."""
    if class_id not in CLASS_IDS:
        raise ValueError(f"ClassId must be one of {CLASS_IDS}, got {class_id!r}")
    return class_id - 1

"""Severstal's constants: image size, classes, CSV layouts, data-set sizes and class colours.

They are the defaults of the core's functions, which take the size and the classes as arguments.
"""

HEIGHT = 256
WIDTH = 1600
NUM_PIXELS = HEIGHT * WIDTH  # 409,600: the largest valid RLE end
NUM_CLASSES = 4
CLASS_IDS = (1, 2, 3, 4)  # ids in files; channel index = class id - 1

COMPETITION = "severstal-steel-defect-detection"

# Official data-set sizes, used to verify a Kaggle download.
NUM_TRAIN_IMAGES = 12568
NUM_TEST_IMAGES = 5506

# The two CSV layouts Kaggle has used for labels and submissions.
LONG_COLUMNS = ("ImageId", "ClassId", "EncodedPixels")  # train.csv since 2019-10
SUBMISSION_COLUMNS = ("ImageId", "EncodedPixels", "ClassId")  # sample_submission.csv
LEGACY_COLUMNS = ("ImageId_ClassId", "EncodedPixels")  # the 2019 layout

# Severstal's four classes first, then more for other data sets (drawings handle at most this many classes).
CLASS_COLOURS_BGR = ((0, 200, 255), (255, 128, 0), (60, 60, 255), (0, 220, 0), (255, 0, 200), (0, 128, 128),
                     (200, 200, 0), (128, 0, 255), (0, 90, 180), (160, 160, 160), (90, 255, 160), (255, 190, 190))
CLASS_COLOURS_RGB = tuple(tuple(c / 255 for c in reversed(bgr)) for bgr in CLASS_COLOURS_BGR)


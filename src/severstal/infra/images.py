"""Image folders: listing them and checking every image (readable, complete, the right size) in threads."""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

from ..core.checks import check_image_bytes, digest
from ..core.constants import HEIGHT, WIDTH
from .errors import UserError, format_problems

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")  # what OpenCV and nn.pipeline.decode_any read
PROGRESS_FROM = 500  # image counts from which a scan shows a progress bar


def image_names(directory: str | os.PathLike) -> list[str]:
    """Sorted file names of the images (by suffix) directly in ``directory``; [] when it is missing."""
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(e.name for e in entries if e.name.lower().endswith(IMAGE_SUFFIXES) and e.is_file())


def default_workers() -> int:
    """Threads for image checks: decoding and reading release the GIL, so one per core."""
    return max(1, os.cpu_count() or 1)


def _scan_one(path: Path, shape: tuple[int, int]) -> tuple[list[str], str | None]:
    try:
        data = path.read_bytes()
    except OSError as error:
        return [f"cannot be read: {error.strerror or error}"], None
    return check_image_bytes(data, shape), digest(data)


def scan_images(directory: str | os.PathLike, names: Iterable[str] | None = None, workers: int | None = None,
                shape: tuple[int, int] | None = (HEIGHT, WIDTH), progress: bool | None = None
                ) -> dict[str, tuple[list[str], str | None]]:
    """Read and check images in a thread pool.

    Args:
        directory: the image folder.
        names: file names to check (default: every image in ``directory``).
        workers: threads (default: one per core).
        shape: expected ``(height, width)``; None: any.
        progress: show a progress bar (default: from 500 images on).

    Returns:
        ``{name: (problems, content digest or None when unreadable)}``.
    """
    directory = Path(directory)
    names = image_names(directory) if names is None else list(names)
    show = len(names) >= PROGRESS_FROM if progress is None else progress
    with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
        results = pool.map(lambda name: _scan_one(directory / name, shape), names)
        return dict(zip(names, tqdm(results, total=len(names), desc=f"check {directory.name}",
                                    unit="img", disable=not show), strict=True))


def image_sizes(directory: str | os.PathLike, names: Iterable[str], workers: int | None = None
                ) -> dict[str, tuple[int, int] | None]:
    """``{name: (height, width)}`` of images from their headers (no decoding); None where it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    def size(name: str) -> tuple[int, int] | None:
        try:
            with Image.open(Path(directory) / name) as image:
                return image.height, image.width
        except (OSError, UnidentifiedImageError, ValueError):
            return None

    names = list(names)
    with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
        return dict(zip(names, pool.map(size, names), strict=True))


def bad_images(directory: str | os.PathLike, names: Iterable[str] | None = None,
               shape: tuple[int, int] = (HEIGHT, WIDTH), progress: bool | None = None) -> dict[str, str]:
    """Images that cannot be used: unreadable, truncated, undecodable or the wrong size.

    Returns:
        ``{file name: reason}``; empty when every image is fine.
    """
    scanned = scan_images(directory, names, shape=shape, progress=progress)
    return {name: "; ".join(problems) for name, (problems, _) in scanned.items() if problems}


def usable_images(directory: str | os.PathLike, names: Iterable[str], shape: tuple[int, int], skip_bad: bool
                  ) -> set[str]:
    """The names among ``names`` that cannot be used, after saying so.

    Args:
        directory: the image folder.
        names: the images a stage is about to read.
        shape: their expected ``(height, width)``.
        skip_bad: list and return the bad ones (``--skip-bad``) instead of stopping.

    Returns:
        The bad image names (empty when all are fine).

    Raises:
        UserError: bad images without ``skip_bad``, listed with the fix.
    """
    bad = bad_images(directory, names, shape=shape)
    if not bad:
        return set()
    listing = format_problems([f"{name}: {reason}" for name, reason in sorted(bad.items())])
    if not skip_bad:
        raise UserError(f"{len(bad):,} image(s) in {directory} cannot be used:\n{listing}\n"
                        "Fix or replace them (severstal check-data lists every problem), or re-run with --skip-bad "
                        "to go on without them.")
    print(f"--skip-bad: leaving out {len(bad):,} image(s) of {directory}:\n{listing}", flush=True)
    return set(bad)

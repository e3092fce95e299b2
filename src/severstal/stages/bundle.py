"""Make the offline Kaggle-notebook bundle (``kaggle.bundle``): fold weights, thresholds, config, wheels,
metadata and the notebook's ``inference.py``, in a folder ``kaggle datasets create`` uploads.

The bundle is built beside its folder and renamed into place, so a failed run leaves the previous
one as it was. A bundle made from the same settings, models, source and wheels is kept; changed
inputs make it again, naming them; other flips or batch size stop unless ``--force``. No
TensorFlow is imported: weights are copied as files.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from ..core.ensemble import FLIPS
from ..infra import locks
from ..infra.artifacts import LOCKS, Paths, replace_folder
from ..infra.commands import add_config_arguments, add_inference_options, config_from_args, inference_options, run_main
from ..infra.errors import UserError
from ..infra.stamps import Action, decide
from ..kaggle.bundle import (
    DEFAULT_OUT,
    USERNAME_PLACEHOLDER,
    assemble,
    bundle_settings,
    bundle_stamp,
    bundled_config_text,
    dataset_metadata,
    dataset_slug,
    human_size,
    kaggle_username,
    plan_models,
    previous_stamp,
    project_root,
    requirements,
)
from ..kaggle.notebook import MANIFEST


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="severstal bundle", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"bundle folder to write (default {DEFAULT_OUT})")
    add_inference_options(parser, FLIPS)  # the folds to include and the flips the notebook averages
    parser.add_argument("--username", default=None,
                        help="Kaggle user name for the dataset id (default: KAGGLE_USERNAME or kaggle.json)")
    parser.add_argument("--tf-keras", dest="tf_keras", action="append", default=[], metavar="VERSION",
                        help="also bundle this tf-keras version, for a notebook whose TensorFlow has that minor "
                             "version and no tf_keras (repeatable)")
    parser.add_argument("--wheels-from", dest="wheels_from", action="append", default=[], metavar="DIR",
                        help="take dependency wheels from this folder before downloading (repeatable; for offline use)")
    parser.add_argument("--force", action="store_true", help="make the bundle again even when it is up to date")
    return parser


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args, inference_options(args))
    paths = Paths(config)
    out = Path(args.out)
    with locks.hold(out.parent / LOCKS, out.name, f"the bundle {out}"):
        folds, gated, copies = plan_models(paths, config.inference.folds)
        settings = bundle_settings(config, folds)
        if len(folds) < config.folds.k and args.folds is None:
            print(f"warning: only fold(s) {folds} of {config.folds.k} are trained; the bundle ensembles those",
                  file=sys.stderr)
        pinned = requirements(args.tf_keras)
        username = args.username or kaggle_username()
        metadata = dataset_metadata(config.experiment_name, username)
        config_text = bundled_config_text(config, settings)
        stamp = bundle_stamp(config, settings, copies, project_root(), pinned, metadata)
        if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).is_file())):
            raise UserError(f"{out} exists and is not a bundle made by severstal bundle: choose another --out "
                            "(it is left as it is)")
        decision = decide(f"the bundle {out}", previous_stamp(out), stamp, args.force)
        if decision.action is Action.SKIP:
            print(decision.note)
            return 0
        if decision.note:
            print(decision.note)
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
        staging.chmod(0o755)
        try:
            manifest = assemble(staging, config_text, config.experiment_name, settings, gated, copies, pinned,
                                metadata, stamp, [Path(folder) for folder in args.wheels_from] + [out / "wheels"], out)
            replace_folder(staging, out)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    total = sum(path.stat().st_size for path in out.rglob("*") if path.is_file())
    print(f"wrote {out}: segmenter folds {folds}{' + classifier gate' if gated else ''}, flips "
          f"{','.join(settings['tta'])}, batch {settings['batch_size']}, {len(manifest['wheels'])} wheels, "
          f"{human_size(total)}")
    print(f"dataset id {metadata['id']}")
    if username is None:
        print(f"note: no Kaggle user name found (kaggle.json / KAGGLE_USERNAME / --username): edit "
              f"{out / 'dataset-metadata.json'} and replace {USERNAME_PLACEHOLDER} before uploading")
    print(f"upload: kaggle datasets create -p {out} --dir-mode zip   (then in the notebook: "
          f"!python ../input/{dataset_slug(config.experiment_name)}/inference.py; see {out / 'README.md'})")
    return 0


def main(argv=None) -> int:
    return run_main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())

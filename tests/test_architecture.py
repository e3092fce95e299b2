"""The import rules of the layered package hold, and the checker catches each kind of violation."""

import subprocess
import sys
import textwrap

import pytest
from import_rules import package_imports, violations

from severstal.cli import STAGES

MODEL_STAGES = ("weights", "train", "oof", "predict", "export")


def test_the_package_keeps_its_import_rules(repo_root):
    assert violations(repo_root / "src" / "severstal", "severstal", {c: m for c, (m, _) in STAGES.items()},
                      MODEL_STAGES) == []


def test_every_stage_module_is_in_the_stage_table(repo_root):
    modules = {f"severstal.stages.{path.stem}" for path in (repo_root / "src" / "severstal" / "stages").glob("*.py")
               if path.stem != "__init__"}
    assert modules == {module for module, _ in STAGES.values()}


def write_package(root, files):
    for name, text in files.items():
        path = root / "fake" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    for folder in {path.parent for path in (root / "fake").rglob("*.py")} | {root / "fake"}:
        (folder / "__init__.py").touch()
    return root / "fake"


CLEAN = {
    "core/rle.py": "import numpy as np\nfrom .labels import X\n",
    "core/labels.py": "X = 1\n",
    "infra/config.py": "from ..core.rle import np\n",
    "nn/models.py": "import tensorflow as tf\nfrom ..infra import config\n",
    "stages/train.py": "from ..infra import config\ndef run():\n    from ..nn import models\n",
    "stages/check.py": "from ..core import rle\n",
    "cli.py": "STAGES = {}\n",
}


@pytest.mark.parametrize("extra, expected", [
    ({}, []),
    ({"core/rle.py": "from ..infra import config\n"},
     ["layers: core.rle line 1 imports infra.config", "circle: core.rle -> infra.config -> core.rle"]),
    ({"core/rle.py": "import yaml\n"}, ["core: core.rle line 1 imports yaml, not the standard library"]),
    ({"stages/check.py": "from . import train\n"},
     ["stages: stages.check line 1 imports stages.train, another stage",
      "no model: stages.check loads TensorFlow through stages.check -> stages.train -> nn.models"]),
    ({"infra/config.py": "import tensorflow\n"}, ["tensorflow: infra.config line 1 imports tensorflow outside nn"]),
    ({"stages/check.py": "def run():\n    from ..nn import models\n"},
     ["no model: stages.check loads TensorFlow through stages.check -> nn.models"]),
    ({"stages/check.py": "from ..infra import config\n", "infra/config.py": "def f():\n    import albumentations\n"},
     ["tensorflow: infra.config line 2 imports albumentations outside nn",
      "no model: stages.check loads TensorFlow through stages.check -> infra.config -> albumentations"]),
    ({"core/labels.py": "from . import rle\n"}, ["circle: core.labels -> core.rle -> core.labels"]),
    ({"infra/config.py": "from ..stages import train\n"},
     ["layers: infra.config line 1 imports stages.train", "circle: infra.config -> stages.train -> infra.config"]),
])
def test_a_deliberate_violation_is_caught(tmp_path, extra, expected):
    root = write_package(tmp_path, {**CLEAN, **extra})
    found = violations(root, "fake", {"train": "fake.stages.train", "check": "fake.stages.check"}, ["train"])
    assert len(found) == len(expected), found
    for line, start in zip(found, expected, strict=True):
        assert line.startswith(start), (line, start)


def test_imports_inside_functions_are_found_and_marked_lazy(tmp_path):
    root = write_package(tmp_path, CLEAN)
    imports = package_imports(root, "fake")["fake.stages.train"]
    assert [(item.target, item.lazy) for item in imports] == [("fake.infra.config", False), ("fake.nn.models", True)]


@pytest.mark.parametrize("module", ["severstal", "severstal.cli", "severstal.stages.check_data",
                                    "severstal.stages.tune", "severstal.stages.bundle", "severstal.stages.train",
                                    "severstal.stages.predict"])
def test_importing_a_command_module_loads_no_tensorflow(module):
    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m.split('.')[0] in "
    code += "('tensorflow', 'tf_keras', 'segmentation_models', 'albumentations')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]"


ARTIFACT_NAMES = ("oof.npz", "config.yaml", "stamp.json", "best.weights.h5", "last.weights.h5", "training.json",
                  "metrics.json", "history.csv", "curves.png", "thresholds.json", "submission.csv", "train_images",
                  "test_images", "train.csv", "test_labels.csv", "sample_submission.csv")


def test_file_names_are_spelled_once(repo_root):
    """Every artifact name is a constant of infra/artifacts.py, every data file name one of infra/layouts.py; other
    code uses the constant.

    The notebook script is exempt: it runs before the package is installed (standard library only).
    """
    import ast

    root = repo_root / "src" / "severstal"
    spelled = []
    for path in sorted(root.rglob("*.py")):
        if path.relative_to(root).as_posix() in ("infra/artifacts.py", "infra/layouts.py", "kaggle/notebook.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in ARTIFACT_NAMES:
                spelled.append(f"{path.relative_to(root)} line {node.lineno}: {node.value!r}")
    assert spelled == []

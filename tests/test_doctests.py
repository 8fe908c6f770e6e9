"""The packages' docstring examples run with the suite, and collecting them has no side effects."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bert_core", "data_contracts", "tasks", "flows")

# Imports every module the doctest run collects, then reports what changed around it.
IMPORT_ALL = """
import importlib, json, logging, os, sys
sys.path.insert(0, sys.argv[1])
from conftest import collect_ignore
for framework in ("tensorflow", "keras", "prefect.main", "mlflow", "great_expectations"):
    importlib.import_module(framework)  # their own import-time changes are not ours
before, handlers = dict(os.environ), len(logging.getLogger().handlers)
modules = sorted(p[:-3].replace("/", ".") for p in sys.argv[2:] if p not in collect_ignore)
for name in modules:
    importlib.import_module(name)
changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))
print(json.dumps({"modules": modules, "environ": changed, "cwd": sorted(os.listdir(".")),
                  "root_handlers": len(logging.getLogger().handlers) - handlers}))
"""


def package_modules() -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


@pytest.mark.slow
def test_importing_every_collected_module_changes_nothing(tmp_path):
    """No files in the working directory (an mlruns/ store, a Prefect home), no environment
    variables, no logging handlers beyond what importing the frameworks themselves does:
    importing is all that collecting a module may do."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", IMPORT_ALL, str(ROOT), *package_modules()],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert "bert_core.tokenization" in report["modules"]
    assert "tasks.pyfunc_model" not in report["modules"]  # conftest.py leaves it out
    assert report["cwd"] == [] and report["environ"] == [] and report["root_handlers"] == 0, report


def test_ignored_modules_exist():
    """A renamed module must leave conftest.py's list too, or its replacement gets collected."""
    collect_ignore = runpy.run_path(str(ROOT / "conftest.py"))["collect_ignore"]
    assert collect_ignore and all((ROOT / path).exists() for path in collect_ignore)


@pytest.mark.slow
def test_plain_pytest_collects_the_doctests():
    result = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                             "-p", "no:cacheprovider", *PACKAGES], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    collected = result.stdout.splitlines()
    for item in ("bert_core/tokenization.py::bert_core.tokenization.whitespace_tokenize",
                 "bert_core/tokenization.py::bert_core.tokenization.convert_by_vocab",
                 "bert_core/optimizer.py::bert_core.optimizer.train_steps"):
        assert item in collected
    assert not any(line.startswith("tasks/pyfunc_model.py") for line in collected)

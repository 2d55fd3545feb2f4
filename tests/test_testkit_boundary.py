"""The test kit (fixtures, local servers) is for development only: no service depends on it,
no service's code imports it, and the image does not install it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_MEMBERS = [
    "shared",
    *(str(p.parent.relative_to(ROOT)) for p in ROOT.glob("services/*/pyproject.toml")),
]


def test_no_runtime_package_depends_on_the_test_kit() -> None:
    assert len(RUNTIME_MEMBERS) == 5, RUNTIME_MEMBERS
    for member in RUNTIME_MEMBERS:
        project = tomllib.loads((ROOT / member / "pyproject.toml").read_text())["project"]
        assert not [d for d in project["dependencies"] if "testkit" in d], member


def test_no_runtime_code_imports_the_test_kit() -> None:
    for member in RUNTIME_MEMBERS:
        for source in (ROOT / member / "src").rglob("*.py"):
            assert "orderflow_testkit" not in source.read_text(), source


def test_the_test_kit_is_a_dev_dependency_and_the_image_leaves_it_out() -> None:
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "testkit" in root["tool"]["uv"]["workspace"]["members"]
    assert "orderflow-testkit" in root["dependency-groups"]["dev"]
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    # the one `uv sync`, with its continued lines
    [sync] = re.findall(r"RUN uv sync(?:[^\n\\]|\\\n)*", dockerfile)
    # every member but the kit, by name: --all-packages would install it and pytest with it
    assert "--all-packages" not in sync and "testkit" not in sync
    assert "--no-dev" in sync
    for service in ("intake", "review-router", "contracts", "notifier"):
        assert f"--package orderflow-{service}" in sync

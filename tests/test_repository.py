"""The repository keeps its promises: README commands, CI, package layout, style."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from tests.conftest import REPOSITORY_ROOT

README = (REPOSITORY_ROOT / "README.md").read_text()


def fenced_commands() -> list[str]:
    return re.findall(r"```bash\n(.*?)\n```", README, flags=re.S)


def test_readme_starts_with_the_two_fresh_machine_commands_and_ci_runs_the_second():
    main_job, test_command = fenced_commands()[:2]
    assert "cups-ros demo" in main_job and "torch==2.13.0" in main_job
    ci_lines = [
        line
        for line in (REPOSITORY_ROOT / ".ci" / "run").read_text().splitlines()
        if line and not line.startswith(("#", "set ", "cd "))
    ]
    assert ci_lines == [test_command]


def test_top_level_is_the_ament_python_layout():
    expected = {"package.xml", "setup.py", "setup.cfg", "resource", "cups_ros", "launch", "config"}
    expected |= {"training", "tests", "README.md", ".ci"}
    listing = subprocess.run(["git", "ls-files"], cwd=REPOSITORY_ROOT, capture_output=True, text=True)
    if listing.returncode != 0:
        pytest.skip("not a git checkout: the layout is checked on tracked files")
    top_level_tracked = {path.split("/")[0] for path in listing.stdout.split()}
    assert expected <= top_level_tracked
    assert top_level_tracked - expected <= {".gitignore", "pyproject.toml", "docs"}  # docs: figures


def test_package_xml_declares_every_ros_dependency_the_nodes_use():
    root = ElementTree.parse(REPOSITORY_ROOT / "package.xml").getroot()
    assert root.get("format") == "3"
    assert root.findtext("name") == "cups_ros"
    assert root.find("export/build_type").text == "ament_python"
    exec_depends = {element.text for element in root.findall("exec_depend")}
    for package in [
        "rclpy",
        "sensor_msgs",
        "stereo_msgs",
        "std_msgs",
        "std_srvs",
        "vision_msgs",
        "diagnostic_msgs",
        "message_filters",
        "launch",
        "launch_ros",
    ]:
        assert package in exec_depends
    assert (REPOSITORY_ROOT / "resource" / "cups_ros").exists()


def test_dependencies_are_pinned_and_exclude_torchvision_and_detectron2():
    module = ast.parse((REPOSITORY_ROOT / "setup.py").read_text())
    lists = {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in module.body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
    }
    requirements = lists["INSTALL_REQUIRES"] + [
        r for extra in lists["EXTRAS_REQUIRE"].values() for r in extra
    ]
    assert "torch==2.13.0" in requirements
    for requirement in requirements:
        assert "==" in requirement, f"{requirement} is not pinned"
        assert not requirement.lower().startswith(("torchvision", "detectron2"))


def test_code_is_formatted_and_lint_clean():
    beside_python = Path(sys.executable).parent / "ruff"
    ruff = str(beside_python) if beside_python.exists() else shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff not installed (it comes with the [test] extra that CI installs)")
    for arguments in (["format", "--check", "."], ["check", "."]):
        result = subprocess.run([ruff, *arguments], cwd=REPOSITORY_ROOT, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr

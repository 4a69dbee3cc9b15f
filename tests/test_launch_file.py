"""launch/perception.launch.py and config/perception.yaml, checked without ROS (the file is parsed,
not run): what it starts is installed, what it reads exists, what it sets is a parameter of the node,
and every argument it declares is used; the parameter file holds exactly the code's defaults."""

from __future__ import annotations

import ast
import fnmatch
from pathlib import Path
from typing import Any

import yaml

from cups_ros.core.config import load_config, to_ros_parameters
from cups_ros.pipeline import PerceptionNodeConfig
from tests.conftest import REPOSITORY_ROOT

LAUNCH_FILE = REPOSITORY_ROOT / "launch" / "perception.launch.py"
CONFIG_FILE = REPOSITORY_ROOT / "config" / "perception.yaml"
PACKAGE = "cups_ros"
PERCEPTION_EXECUTABLE = "perception_node"
# Started only with online_learning:=true; their executables arrive with the online-learning stage.
PLACEHOLDER_EXECUTABLES = {"pseudo_label_node", "self_training_node"}
STANDARD_PARAMETERS = {"use_sim_time"}

TREE = ast.parse(LAUNCH_FILE.read_text(), filename=str(LAUNCH_FILE))


def calls(name: str, tree: ast.AST = TREE) -> list[ast.Call]:
    """Calls of ``name(...)`` or ``something.name(...)``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            function = node.func
            called = function.id if isinstance(function, ast.Name) else getattr(function, "attr", None)
            if called == name:
                found.append(node)
    return found


def keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def assignments() -> dict[str, ast.expr]:
    """Every ``name = value`` of the file (module and functions alike: the names are distinct)."""
    return {
        target.id: node.value
        for node in ast.walk(TREE)
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }


def parameter_arguments() -> dict[str, str]:
    return ast.literal_eval(assignments()["PARAMETER_ARGUMENTS"])


def console_scripts() -> set[str]:
    setup = ast.parse((REPOSITORY_ROOT / "setup.py").read_text())
    for call in calls("setup", setup):
        entry_points = ast.literal_eval(keyword(call, "entry_points"))
        return {line.split("=")[0].strip() for line in entry_points["console_scripts"]}
    raise AssertionError("setup.py calls no setup()")


def _setup_string(node: ast.expr) -> str:
    """A string or f-string of setup.py, with {PACKAGE} filled in."""
    if isinstance(node, ast.Constant):
        return str(node.value)
    assert isinstance(node, ast.JoinedStr), ast.unparse(node)
    return "".join(
        str(part.value) if isinstance(part, ast.Constant) else {"PACKAGE": PACKAGE}[ast.unparse(part.value)]
        for part in node.values
    )


def data_file_patterns() -> dict[str, list[str]]:
    """setup.py data_files as {install folder (share/cups_ros/...): [glob patterns or files]}."""
    setup = ast.parse((REPOSITORY_ROOT / "setup.py").read_text())
    (call,) = calls("setup", setup)
    patterns: dict[str, list[str]] = {}
    for entry in keyword(call, "data_files").elts:  # type: ignore[union-attr]
        folder_node, files_node = entry.elts
        if isinstance(files_node, ast.Call):  # glob("config/*.yaml")
            files = [_setup_string(files_node.args[0])]
        else:
            files = [_setup_string(element) for element in files_node.elts]
        patterns[_setup_string(folder_node)] = files
    return patterns


def node_actions() -> dict[str, ast.Call]:
    actions = {}
    for call in calls("Node"):
        executable = keyword(call, "executable")
        assert isinstance(executable, ast.Constant), "executables are named literally"
        assert ast.unparse(keyword(call, "package")) == "PACKAGE", "nodes of this package only"
        actions[executable.value] = call
    return actions


def test_the_launch_file_defines_its_entry_point() -> None:
    functions = {node.name for node in TREE.body if isinstance(node, ast.FunctionDef)}
    assert "generate_launch_description" in functions
    assert ast.literal_eval(assignments()["PACKAGE"]) == PACKAGE


def test_every_executable_is_a_console_script_or_a_guarded_placeholder() -> None:
    actions = node_actions()
    scripts = console_scripts()
    assert PERCEPTION_EXECUTABLE in actions and PERCEPTION_EXECUTABLE in scripts
    for executable, call in actions.items():
        if executable in scripts:
            continue
        assert executable in PLACEHOLDER_EXECUTABLES, (
            f"{executable} is neither a console script nor a placeholder"
        )
        condition = keyword(call, "condition")
        if isinstance(condition, ast.Name):
            condition = assignments()[condition.id]
        assert ast.unparse(condition) == "IfCondition(LaunchConfiguration('online_learning'))", executable
    assert set(actions) == {PERCEPTION_EXECUTABLE} | PLACEHOLDER_EXECUTABLES


def test_the_default_config_file_exists_and_is_installed_where_the_launch_file_looks() -> None:
    (join,) = [
        c
        for c in calls("join")
        if c.args and ast.unparse(c.args[0]).startswith("get_package_share_directory")
    ]
    relative = Path(*[ast.literal_eval(argument) for argument in join.args[1:]])
    assert relative == Path("config/perception.yaml")
    assert (REPOSITORY_ROOT / relative).is_file()
    installed = data_file_patterns()
    assert any(fnmatch.fnmatch(str(relative), pattern) for pattern in installed[f"share/{PACKAGE}/config"])
    assert any(
        fnmatch.fnmatch("launch/perception.launch.py", p) for p in installed[f"share/{PACKAGE}/launch"]
    )
    (declaration,) = [c for c in calls("DeclareLaunchArgument") if c.args[0].value == "config_file"]
    assert ast.unparse(keyword(declaration, "default_value")) == "default_config"


def test_every_parameter_the_launch_file_sets_is_a_field_of_the_node_config() -> None:
    fields = set(to_ros_parameters(PerceptionNodeConfig()))
    for argument, parameter in parameter_arguments().items():
        assert parameter in fields, f"launch argument {argument} sets unknown parameter {parameter}"
    for executable, call in node_actions().items():
        allowed = fields | STANDARD_PARAMETERS if executable == PERCEPTION_EXECUTABLE else STANDARD_PARAMETERS
        parameters = keyword(call, "parameters")
        assert isinstance(parameters, ast.List)
        for item in parameters.elts:
            if isinstance(item, ast.Dict):
                names = {ast.literal_eval(key) for key in item.keys if key is not None}  # None: **overrides
                assert names <= allowed, f"{executable} sets {names - allowed}"
            else:  # a parameter file
                assert ast.unparse(item) == "LaunchConfiguration('config_file')", ast.unparse(item)


def test_every_declared_launch_argument_is_used_and_every_used_one_is_declared() -> None:
    declared = {call.args[0].value for call in calls("DeclareLaunchArgument")}
    literal = {c.args[0].value for c in calls("LaunchConfiguration") if isinstance(c.args[0], ast.Constant)}
    # The topic, model and backend arguments are read in the loop over PARAMETER_ARGUMENTS.
    loops = [
        node
        for node in ast.walk(TREE)
        if isinstance(node, ast.For) and ast.unparse(node.iter) == "PARAMETER_ARGUMENTS.items()"
    ]
    assert loops and any(
        isinstance(c.args[0], ast.Name) and c.args[0].id == loops[0].target.elts[0].id  # type: ignore[attr-defined]
        for c in calls("LaunchConfiguration", loops[0])
    )
    used = literal | set(parameter_arguments())
    assert declared == used
    expected = {"namespace", "config_file", "model_path", "backend", "use_sim_time", "online_learning"}
    assert expected | {"left_image", "right_image", "left_info", "right_info"} == declared


def _flatten(prefix: str, values: Any, into: dict[str, Any]) -> None:
    if isinstance(values, dict):
        for key, value in values.items():
            _flatten(f"{prefix}.{key}" if prefix else key, value, into)
    else:
        into[prefix] = values


def test_the_parameter_file_holds_exactly_the_code_defaults_with_their_ros_types() -> None:
    assert load_config(PerceptionNodeConfig, CONFIG_FILE) == PerceptionNodeConfig()
    document = yaml.safe_load(CONFIG_FILE.read_text())
    assert list(document) == ["/**"]
    in_file: dict[str, Any] = {}
    _flatten("", document["/**"]["ros__parameters"], in_file)
    defaults = to_ros_parameters(PerceptionNodeConfig())
    assert set(in_file) == set(defaults), "every parameter is in the file, and nothing else"
    for name, default in defaults.items():
        # ROS 2 parameters are typed: 1 for a float parameter would be refused by rclpy.
        assert type(in_file[name]) is type(default), (
            f"{name}: {in_file[name]!r} is not a {type(default).__name__}"
        )
        assert in_file[name] == default, name

"""launch/perception.launch.py, config/perception.yaml and config/online_learning.yaml, checked without
ROS. Statically (the file parsed): what it starts is installed, what it reads exists, what it sets is
a parameter of the node, and every argument it declares is used. Run (its launch_nodes on stand-ins of
the few launch classes it uses, recording what they are given): which nodes start with which
parameter files and overrides, and that the perception node follows the self-training node's store.
The parameter files hold exactly the code's defaults."""

from __future__ import annotations

import ast
import fnmatch
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import yaml

from cups_ros.core.config import from_ros_parameters, load_config, to_ros_parameters
from cups_ros.online.learning import OnlineLearningConfig, PseudoLabelNodeConfig, SelfTrainingNodeConfig
from cups_ros.pipeline import PerceptionNodeConfig
from tests.conftest import REPOSITORY_ROOT

LAUNCH_FILE = REPOSITORY_ROOT / "launch" / "perception.launch.py"
CONFIG_FILE = REPOSITORY_ROOT / "config" / "perception.yaml"
ONLINE_CONFIG_FILE = REPOSITORY_ROOT / "config" / "online_learning.yaml"
PACKAGE = "cups_ros"
PERCEPTION_EXECUTABLE = "perception_node"
# Started only with online_learning:=true.
ONLINE_EXECUTABLES = {"pseudo_label_node", "self_training_node"}
NODE_CONFIGS: dict[str, type] = {
    PERCEPTION_EXECUTABLE: PerceptionNodeConfig,
    "pseudo_label_node": PseudoLabelNodeConfig,
    "self_training_node": SelfTrainingNodeConfig,
}
PARAMETER_FILE_ARGUMENTS = {
    PERCEPTION_EXECUTABLE: "config_file",
    "pseudo_label_node": "online_config_file",
    "self_training_node": "online_config_file",
}
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


def _parents() -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(TREE) for child in ast.iter_child_nodes(node)}


def guarding_conditions(call: ast.Call) -> list[str]:
    """The tests of the ``if`` statements a call sits inside."""
    parents, conditions = _parents(), []
    node: ast.AST | None = call
    while node is not None:
        parent = parents.get(node)
        if isinstance(parent, ast.If) and node in parent.body:
            conditions.append(ast.unparse(parent.test))
        node = parent
    return conditions


def test_every_executable_is_a_console_script_and_online_nodes_start_only_with_online_learning() -> None:
    actions = node_actions()
    scripts = console_scripts()
    assert set(actions) == {PERCEPTION_EXECUTABLE} | ONLINE_EXECUTABLES
    for executable in actions:
        assert executable in scripts, f"{executable} is not a console script of setup.py"
        module, _, function = next(
            line.split("=")[1].strip()
            for line in _console_script_lines()
            if line.split("=")[0].strip() == executable
        ).partition(":")
        assert importlib.util.find_spec(module) is not None, module
        assert (
            f"def {function}(" in (REPOSITORY_ROOT / Path(*module.split("."))).with_suffix(".py").read_text()
        )
    assert guarding_conditions(actions[PERCEPTION_EXECUTABLE]) == []
    for executable in ONLINE_EXECUTABLES:
        assert guarding_conditions(actions[executable]) == ["online_learning"], executable
    online_learning = assignments()["online_learning"]
    assert ast.unparse(online_learning) == (
        "LaunchConfiguration('online_learning').perform(context).lower() in TRUE_WORDS"
    )


def _console_script_lines() -> list[str]:
    setup = ast.parse((REPOSITORY_ROOT / "setup.py").read_text())
    (call,) = calls("setup", setup)
    return ast.literal_eval(keyword(call, "entry_points"))["console_scripts"]


def test_the_default_config_files_exist_and_are_installed_where_the_launch_file_looks() -> None:
    share = assignments()["share"]
    assert ast.unparse(share) == "get_package_share_directory(PACKAGE)"
    joins = {
        target: Path(*[ast.literal_eval(argument) for argument in value.args[1:]])
        for target, value in assignments().items()
        if isinstance(value, ast.Call) and ast.unparse(value).startswith("os.path.join(share,")
    }
    assert joins == {
        "default_config": Path("config/perception.yaml"),
        "default_online_config": Path("config/online_learning.yaml"),
    }
    installed = data_file_patterns()
    for relative in joins.values():
        assert (REPOSITORY_ROOT / relative).is_file()
        assert any(fnmatch.fnmatch(str(relative), p) for p in installed[f"share/{PACKAGE}/config"]), relative
    assert any(
        fnmatch.fnmatch("launch/perception.launch.py", p) for p in installed[f"share/{PACKAGE}/launch"]
    )
    declarations = {c.args[0].value: c for c in calls("DeclareLaunchArgument")}
    assert ast.unparse(keyword(declarations["config_file"], "default_value")) == "default_config"
    assert (
        ast.unparse(keyword(declarations["online_config_file"], "default_value")) == "default_online_config"
    )


def test_every_parameter_the_launch_file_sets_is_a_field_of_the_node_config() -> None:
    fields = {executable: set(to_ros_parameters(schema())) for executable, schema in NODE_CONFIGS.items()}
    for argument, parameter in parameter_arguments().items():
        assert parameter in fields[PERCEPTION_EXECUTABLE], f"argument {argument} sets unknown {parameter}"
    constants = {name: ast.literal_eval(value) for name, value in assignments().items() if name.isupper()}
    for name in ("FIT_PARAMETER", "BUFFER_DIR_PARAMETER", "STORE_DIR_PARAMETER", "INITIAL_MODEL_PARAMETER"):
        for executable in ONLINE_EXECUTABLES:
            assert constants[name] in fields[executable], (
                f"{name} = {constants[name]} is no {executable} field"
            )
    assert constants["MODEL_STORE_PARAMETER"] in fields[PERCEPTION_EXECUTABLE]
    assert constants["DEFAULT_STORE_DIR"] == OnlineLearningConfig().store_dir
    for executable, call in node_actions().items():
        allowed = fields[executable] | STANDARD_PARAMETERS
        parameters = keyword(call, "parameters")
        assert isinstance(parameters, ast.List)
        for item in parameters.elts:
            if isinstance(item, ast.Dict):
                names = {ast.literal_eval(key) for key in item.keys if key is not None}  # None: **overrides
                assert names <= allowed, f"{executable} sets {names - allowed}"
            else:  # a parameter file
                expected = f"LaunchConfiguration('{PARAMETER_FILE_ARGUMENTS[executable]}')"
                assert ast.unparse(item) == expected, ast.unparse(item)
    self_training = node_actions()["self_training_node"]
    assert ast.unparse(keyword(self_training, "name")) == "SELF_TRAINING_NAME"


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
    expected |= {"online_config_file", "fit", "online_dir"}
    assert expected | {"left_image", "right_image", "left_info", "right_info"} == declared


# --- the launch file run on stand-ins of the launch API ---------------------------------------


class _Recorded:
    """A launch action or substitution that keeps what it was given."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs


class _LaunchConfiguration(_Recorded):
    """launch.substitutions.LaunchConfiguration: perform() reads the context's launch configurations."""

    def perform(self, context: Any) -> str:
        return context.launch_configurations[self.args[0]]


def _launch_module(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """The launch file as a module, on stand-ins of ament_index_python / launch / launch_ros."""
    stand_ins = {
        "ament_index_python": {},
        "ament_index_python.packages": {"get_package_share_directory": lambda package: str(REPOSITORY_ROOT)},
        "launch": {},
        "launch.actions": {
            "DeclareLaunchArgument": type("DeclareLaunchArgument", (_Recorded,), {}),
            "OpaqueFunction": type("OpaqueFunction", (_Recorded,), {}),
        },
        "launch.launch_description": {"LaunchDescription": type("LaunchDescription", (_Recorded,), {})},
        "launch.substitutions": {"LaunchConfiguration": _LaunchConfiguration},
        "launch_ros": {},
        "launch_ros.actions": {"Node": type("Node", (_Recorded,), {})},
    }
    for name, attributes in stand_ins.items():
        module = types.ModuleType(name)
        module.__dict__.update(attributes)
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location("perception_launch", LAUNCH_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def launched(monkeypatch: pytest.MonkeyPatch, **arguments: str) -> dict[str, dict[str, Any]]:
    """{executable: {"name", "namespace", "files", "overrides"}} of ``ros2 launch ... name:=value``."""
    module = _launch_module(monkeypatch)
    description = module.generate_launch_description()
    (entities,) = description.args
    declared = {e.args[0]: e.kwargs["default_value"] for e in entities if "default_value" in e.kwargs}
    unknown = set(arguments) - set(declared)
    assert not unknown, f"undeclared launch arguments {unknown}"
    context = types.SimpleNamespace(launch_configurations={**declared, **arguments})
    (opaque,) = [e for e in entities if type(e).__name__ == "OpaqueFunction"]
    nodes = {}
    for node in opaque.kwargs["function"](context):
        files = [p.perform(context) for p in node.kwargs["parameters"] if isinstance(p, _LaunchConfiguration)]
        (overrides,) = [p for p in node.kwargs["parameters"] if isinstance(p, dict)]
        nodes[node.kwargs["executable"]] = {
            "name": node.kwargs["name"],
            "namespace": node.kwargs["namespace"].perform(context),
            "files": files,
            "overrides": overrides,
        }
    return nodes


def node_config(executable: str, node: dict[str, Any]) -> Any:
    """The config the node would build: code defaults, then its parameter files, then the overrides
    (parameters it does not declare are ignored, as a node ignores them)."""
    schema = NODE_CONFIGS[executable]
    values = to_ros_parameters(schema())
    for path in node["files"]:
        document = yaml.safe_load(Path(path).read_text())
        for section in ("/**", node["name"]):
            in_file: dict[str, Any] = {}
            _flatten("", (document.get(section) or {}).get("ros__parameters", {}), in_file)
            values.update({name: value for name, value in in_file.items() if name in values})
    unknown = set(node["overrides"]) - set(values) - STANDARD_PARAMETERS
    assert not unknown, f"{executable} is given parameters it does not have: {unknown}"
    values.update({name: value for name, value in node["overrides"].items() if name in values})
    return from_ros_parameters(schema, values)


def test_without_online_learning_only_the_perception_node_starts_with_the_file_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    nodes = launched(monkeypatch)
    assert set(nodes) == {PERCEPTION_EXECUTABLE}
    perception = nodes[PERCEPTION_EXECUTABLE]
    assert perception["files"] == [str(CONFIG_FILE)]
    assert perception["overrides"] == {"use_sim_time": False}
    assert node_config(PERCEPTION_EXECUTABLE, perception) == PerceptionNodeConfig()


def test_online_learning_starts_both_nodes_and_perception_follows_their_store(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    nodes = launched(
        monkeypatch,
        namespace="front",
        online_learning="true",
        use_sim_time="true",
        model_path="/models/cups.pt",
        fit="/data/fit",
        online_dir="/var/online",
    )
    assert set(nodes) == {PERCEPTION_EXECUTABLE} | ONLINE_EXECUTABLES
    assert {node["namespace"] for node in nodes.values()} == {"front"}
    assert all(node["overrides"]["use_sim_time"] is True for node in nodes.values())
    perception = node_config(PERCEPTION_EXECUTABLE, nodes[PERCEPTION_EXECUTABLE])
    assert perception.model_store == "/var/online/models"
    assert perception.perception.model.path == "/models/cups.pt"
    for executable in ONLINE_EXECUTABLES:
        assert nodes[executable]["files"] == [str(ONLINE_CONFIG_FILE)]
        online = node_config(executable, nodes[executable]).online
        assert online.labeller.fit == "/data/fit"
        assert (online.buffer_dir, online.store_dir) == ("/var/online/buffer", "/var/online/models")
        assert online.initial_model == "/models/cups.pt"
    training = node_config("self_training_node", nodes["self_training_node"])
    assert perception.model_store == training.online.store_dir


def test_without_online_dir_the_store_folder_comes_from_the_online_config_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    nodes = launched(monkeypatch, online_learning="true")
    training = node_config("self_training_node", nodes["self_training_node"])
    perception = node_config(PERCEPTION_EXECUTABLE, nodes[PERCEPTION_EXECUTABLE])
    assert perception.model_store == training.online.store_dir == OnlineLearningConfig().store_dir
    assert "online.labeller.fit" not in nodes["pseudo_label_node"]["overrides"]  # the file's stays
    assert "online.initial_model" not in nodes["self_training_node"]["overrides"]

    # A file of one's own, with the store set for the self-training node only (later sections win).
    custom = tmp_path / "online.yaml"
    custom.write_text(
        yaml.safe_dump(
            {
                "/**": {"ros__parameters": {"online": {"store_dir": "/srv/everyone"}}},
                "/front/self_training": {"ros__parameters": {"online.store_dir": "/srv/trainer"}},
            }
        )
    )
    nodes = launched(monkeypatch, online_learning="true", namespace="front", online_config_file=str(custom))
    assert nodes[PERCEPTION_EXECUTABLE]["overrides"]["model_store"] == "/srv/trainer"


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


def test_the_online_parameter_file_holds_exactly_both_online_nodes_defaults() -> None:
    """Both online nodes read config/online_learning.yaml: it holds the union of their parameters,
    each with its code default and ROS type, and gives each node exactly its default config."""
    document = yaml.safe_load(ONLINE_CONFIG_FILE.read_text())
    assert list(document) == ["/**"]
    in_file: dict[str, Any] = {}
    _flatten("", document["/**"]["ros__parameters"], in_file)
    defaults_of = {
        schema: to_ros_parameters(schema()) for schema in (PseudoLabelNodeConfig, SelfTrainingNodeConfig)
    }
    union = set().union(*(set(defaults) for defaults in defaults_of.values()))
    assert set(in_file) == union, "every parameter of either node is in the file, and nothing else"
    for schema, defaults in defaults_of.items():
        for name, default in defaults.items():
            assert type(in_file[name]) is type(default), (
                f"{name}: {in_file[name]!r} is not a {type(default).__name__}"
            )
            assert in_file[name] == default, name
        # What the node declares, read from the file: exactly the dataclass defaults.
        assert from_ros_parameters(schema, {name: in_file[name] for name in defaults}) == schema()

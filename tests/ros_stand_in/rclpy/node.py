"""rclpy.node.Node: parameters (declared, statically typed, overridable), publishers, subscriptions,
timers, a logger and a ROS clock, with Humble's signatures (see tests/test_perception_node.py)."""

from __future__ import annotations

import re
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.clock import Clock, ROSClock
from rclpy.context import RosArguments, parameters_from_file
from rclpy.exceptions import (
    InvalidParameterTypeException,
    InvalidParameterValueException,
    NotInitializedException,
    ParameterAlreadyDeclaredException,
    ParameterNotDeclaredException,
    ParameterUninitializedException,
)
from rclpy.logging import get_logger
from rclpy.parameter import Parameter
from rclpy.publisher import Publisher
from rclpy.qos import QoSProfile
from rclpy.subscription import Subscription
from rclpy.time_source import TimeSource
from rclpy.timer import Timer
from rclpy.utilities import get_default_context

S_TO_NS = 1000 * 1000 * 1000
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TOPIC_TOKEN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _descriptor(**fields: Any) -> Any:
    values = {
        "name": "",
        "type": 0,
        "description": "",
        "additional_constraints": "",
        "read_only": False,
        "dynamic_typing": False,
        "floating_point_range": [],
        "integer_range": [],
    }
    values.update(fields)
    return ParameterDescriptor(**values)


def _result(successful: bool, reason: str = "") -> Any:
    return SetParametersResult(successful=successful, reason=reason)


class Node:
    """A ROS node of the stand-in graph; topic names resolve as rcl resolves them."""

    def __init__(
        self,
        node_name: str,
        *,
        context: Any = None,
        cli_args: list[str] | None = None,
        namespace: str | None = None,
        use_global_arguments: bool = True,
        enable_rosout: bool = True,
        start_parameter_services: bool = True,
        parameter_overrides: list[Parameter] | None = None,
        allow_undeclared_parameters: bool = False,
        automatically_declare_parameters_from_overrides: bool = False,
    ) -> None:
        self._context = get_default_context() if context is None else context
        if not self._context.ok():
            raise NotInitializedException("cannot create node")
        arguments = [self._context.arguments] if use_global_arguments else []
        arguments.append(RosArguments.parse(cli_args, implicit_ros_args=True))
        remappings = [rule for argument in arguments for rule in argument.remappings]
        for name, value in remappings:
            if name == "__node":
                node_name = value
            elif name == "__ns":
                namespace = value
        if not _NAME.match(node_name):
            raise ValueError(f"Invalid node name: {node_name!r}")
        namespace = namespace or "/"
        self._namespace = namespace if namespace.startswith("/") else "/" + namespace
        self._name = node_name
        self._remappings = [(a, b) for a, b in remappings if not a.startswith("__")]
        self._parameters: dict[str, Parameter] = {}
        self._descriptors: dict[str, Any] = {}
        self._parameters_callbacks: list[Callable[[list[Parameter]], Any]] = []
        self._allow_undeclared_parameters = allow_undeclared_parameters
        self._publishers: list[Publisher] = []
        self._subscriptions: list[Subscription] = []
        self._timers: list[Timer] = []
        self.__executor_weakref: Any = None
        self._logger = get_logger(self.get_fully_qualified_name().lstrip("/").replace("/", "."))

        overrides: dict[str, Any] = {}
        for argument in arguments:
            for path in argument.parameter_files:
                overrides.update(parameters_from_file(path, self._name, self._namespace))
            overrides.update(dict(argument.parameters))
        self._parameter_overrides = {name: Parameter(name, value=value) for name, value in overrides.items()}
        if parameter_overrides is not None:
            self._parameter_overrides.update({p.name: p for p in parameter_overrides})
        if automatically_declare_parameters_from_overrides:
            self.declare_parameters(
                "",
                [(name, p.value, _descriptor()) for name, p in self._parameter_overrides.items()],
                ignore_override=True,
            )
        self._clock = ROSClock()
        self._time_source = TimeSource(node=self)
        self._time_source.attach_clock(self._clock)

    # --- identity, clock, logging ---

    @property
    def context(self) -> Any:
        return self._context

    @property
    def executor(self) -> Any:
        return self.__executor_weakref() if self.__executor_weakref else None

    @executor.setter
    def executor(self, new_executor: Any) -> None:
        current = self.executor
        if current == new_executor:
            return
        if current is not None:
            current.remove_node(self)
        if new_executor is None:
            self.__executor_weakref = None
        else:
            new_executor.add_node(self)
            self.__executor_weakref = weakref.ref(new_executor)

    @property
    def publishers(self) -> Iterator[Publisher]:
        yield from self._publishers

    @property
    def subscriptions(self) -> Iterator[Subscription]:
        yield from self._subscriptions

    @property
    def timers(self) -> Iterator[Timer]:
        yield from self._timers

    def get_name(self) -> str:
        return self._name

    def get_namespace(self) -> str:
        return self._namespace

    def get_fully_qualified_name(self) -> str:
        return f"{self._namespace.rstrip('/')}/{self._name}"

    def get_clock(self) -> Clock:
        return self._clock

    def get_logger(self) -> Any:
        return self._logger

    # --- parameters ---

    def declare_parameter(
        self, name: str, value: Any = None, descriptor: Any = None, ignore_override: bool = False
    ) -> Parameter:
        if value is None and descriptor is None:
            args: tuple[Any, ...] = (name,)
        else:
            args = (name, value, _descriptor() if descriptor is None else descriptor)
        return self.declare_parameters("", [args], ignore_override)[0]

    def declare_parameters(
        self, namespace: str, parameters: list[tuple[Any, ...]], ignore_override: bool = False
    ) -> list[Parameter]:
        parameter_list: list[Parameter] = []
        descriptors: dict[str, Any] = {}
        for index, parameter_tuple in enumerate(parameters):
            if len(parameter_tuple) < 1 or len(parameter_tuple) > 3:
                raise TypeError(
                    f"Invalid parameter tuple length at index {index} in parameters list: {parameter_tuple}; "
                    "expecting length between 1 and 3"
                )
            name = parameter_tuple[0]
            second = parameter_tuple[1] if len(parameter_tuple) > 1 else None
            descriptor = parameter_tuple[2] if len(parameter_tuple) > 2 else _descriptor()
            if not isinstance(name, str):
                raise TypeError(f"First element {name} at index {index} in parameters list is not a str.")
            if not isinstance(descriptor, ParameterDescriptor):
                raise TypeError(
                    f"Third element {descriptor} at index {index} in parameters list "
                    "is not a ParameterDescriptor."
                )
            if len(parameter_tuple) == 1:
                descriptor.dynamic_typing = True
            value = None
            if isinstance(second, Parameter.Type):
                if second == Parameter.Type.NOT_SET:
                    raise ValueError(
                        f"Cannot declare parameter {{{name}}} as statically typed of type NOT_SET"
                    )
                descriptor.type = second.value
            else:
                value = second
                if not descriptor.dynamic_typing and value is not None:
                    descriptor.type = Parameter.Type.from_parameter_value(value).value
            if not ignore_override and name in self._parameter_overrides:
                value = self._parameter_overrides[name].value
            if namespace:
                name = f"{namespace}.{name}"
            parameter_list.append(Parameter(name, value=value))
            descriptors[name] = descriptor
        already = [p.name for p in parameter_list if p.name in self._parameters]
        if already:
            raise ParameterAlreadyDeclaredException(already)
        for parameter in parameter_list:
            result = self._set_one(parameter, descriptors[parameter.name], declaring=True)
            if not result.successful:
                if result.reason.startswith("Wrong parameter type"):
                    raise InvalidParameterTypeException(
                        parameter, Parameter.Type(descriptors[parameter.name].type).name
                    )
                raise InvalidParameterValueException(parameter.name, parameter.value, result.reason)
        return [self._parameters[p.name] for p in parameter_list]

    def _set_one(self, parameter: Parameter, descriptor: Any, declaring: bool) -> Any:
        if descriptor.read_only and not declaring:
            return _result(False, "Trying to set a read-only parameter: " + parameter.name)
        if parameter.type_ == Parameter.Type.NOT_SET and not declaring:
            return _result(False, "Static parameter cannot be undeclared")
        if (
            not descriptor.dynamic_typing
            and parameter.type_ != Parameter.Type.NOT_SET
            and descriptor.type != parameter.type_.value
        ):
            return _result(
                False,
                f"Wrong parameter type, expected '{Parameter.Type(descriptor.type)}' got '{parameter.type_}'",
            )
        for callback in self._parameters_callbacks:
            result = callback([parameter])
            if not result.successful:
                return result
        self._parameters[parameter.name] = parameter
        self._descriptors[parameter.name] = descriptor
        return _result(True)

    def has_parameter(self, name: str) -> bool:
        return name in self._parameters

    def get_parameter(self, name: str) -> Parameter:
        if self.has_parameter(name):
            parameter = self._parameters[name]
            if parameter.type_ != Parameter.Type.NOT_SET or self._descriptors[name].dynamic_typing:
                return parameter
            raise ParameterUninitializedException(name)
        if self._allow_undeclared_parameters:
            return Parameter(name, Parameter.Type.NOT_SET, None)
        raise ParameterNotDeclaredException(name)

    def get_parameters(self, names: list[str]) -> list[Parameter]:
        if not all(isinstance(name, str) for name in names):
            raise TypeError("All names must be instances of type str")
        return [self.get_parameter(name) for name in names]

    def get_parameter_or(self, name: str, alternative_value: Parameter | None = None) -> Parameter:
        if alternative_value is None:
            alternative_value = Parameter(name, Parameter.Type.NOT_SET)
        return self._parameters.get(name, alternative_value)

    def set_parameters(self, parameter_list: list[Parameter]) -> list[Any]:
        results = []
        for parameter in parameter_list:
            if parameter.name not in self._parameters:
                if not self._allow_undeclared_parameters:
                    raise ParameterNotDeclaredException([parameter.name])
                results.append(self._set_one(parameter, _descriptor(dynamic_typing=True), declaring=True))
                continue
            results.append(self._set_one(parameter, self._descriptors[parameter.name], declaring=False))
        return results

    def add_on_set_parameters_callback(self, callback: Callable[[list[Parameter]], Any]) -> None:
        self._parameters_callbacks.insert(0, callback)

    def remove_on_set_parameters_callback(self, callback: Callable[[list[Parameter]], Any]) -> None:
        self._parameters_callbacks.remove(callback)

    # --- names ---

    def _resolve(self, topic: str) -> str:
        """rcl's expansion: absolute stays, ~ is the node's name, relative goes under the namespace;
        then the remapping rules (whose left sides are expanded the same way)."""

        def expand(name: str) -> str:
            if not name:
                raise ValueError("topic name must not be empty")
            if name.startswith("~"):
                name = self.get_fully_qualified_name() + name[1:]
            elif not name.startswith("/"):
                name = f"{self._namespace.rstrip('/')}/{name}"
            tokens = name.split("/")[1:]
            if name.endswith("/") or not all(_TOPIC_TOKEN.match(token) for token in tokens):
                raise ValueError(f"Invalid topic name: {name!r}")
            return name

        expanded = expand(topic)
        for source, target in self._remappings:
            if expand(source) == expanded:
                return expand(target)
        return expanded

    @staticmethod
    def _qos(qos_profile: QoSProfile | int) -> QoSProfile:
        if isinstance(qos_profile, QoSProfile):
            return qos_profile
        if isinstance(qos_profile, int) and not isinstance(qos_profile, bool):
            return QoSProfile(depth=qos_profile)
        raise TypeError(f"Expected QoSProfile or int, but received {type(qos_profile)!r}")

    # --- entities ---

    def create_publisher(
        self,
        msg_type: Any,
        topic: str,
        qos_profile: QoSProfile | int,
        *,
        callback_group: Any = None,
        event_callbacks: Any = None,
        qos_overriding_options: Any = None,
        publisher_class: type[Publisher] = Publisher,
    ) -> Publisher:
        publisher = publisher_class(
            self._context.graph, msg_type, self._resolve(topic), self._qos(qos_profile)
        )
        self._publishers.append(publisher)
        self._context.graph.add_publisher(publisher)
        return publisher

    def create_subscription(
        self,
        msg_type: Any,
        topic: str,
        callback: Callable[[Any], None],
        qos_profile: QoSProfile | int,
        *,
        callback_group: Any = None,
        event_callbacks: Any = None,
        qos_overriding_options: Any = None,
        raw: bool = False,
    ) -> Subscription:
        subscription = Subscription(
            self._context.graph, msg_type, self._resolve(topic), callback, self._qos(qos_profile), raw
        )
        self._subscriptions.append(subscription)
        self._context.graph.add_subscription(subscription)
        return subscription

    def create_timer(
        self,
        timer_period_sec: float,
        callback: Callable[[], Any],
        callback_group: Any = None,
        clock: Clock | None = None,
    ) -> Timer:
        timer_period_nsec = int(float(timer_period_sec) * S_TO_NS)
        timer = Timer(
            callback,
            callback_group,
            timer_period_nsec,
            self._clock if clock is None else clock,
            context=self._context,
        )
        self._timers.append(timer)
        self._context.graph.notify()
        return timer

    def destroy_publisher(self, publisher: Publisher) -> bool:
        if publisher in self._publishers:
            self._publishers.remove(publisher)
            publisher.destroy()
            return True
        return False

    def destroy_subscription(self, subscription: Subscription) -> bool:
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)
            subscription.destroy()
            return True
        return False

    def destroy_timer(self, timer: Timer) -> bool:
        if timer in self._timers:
            self._timers.remove(timer)
            timer.destroy()
            return True
        return False

    def destroy_node(self) -> None:
        for publisher in list(self._publishers):
            self.destroy_publisher(publisher)
        for subscription in list(self._subscriptions):
            self.destroy_subscription(subscription)
        for timer in list(self._timers):
            self.destroy_timer(timer)

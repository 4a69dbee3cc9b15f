"""rclpy.qos: QoSProfile and the policy enums with rmw's values, and the predefined profiles.

The predefined profiles carry the values of rmw/qos_profiles.h (Humble): sensor data is KEEP_LAST 5,
BEST_EFFORT, VOLATILE; the default (system default for publishers/subscriptions built from a depth)
is KEEP_LAST 10, RELIABLE, VOLATILE.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

from rclpy.duration import Duration

__all__ = [
    "DurabilityPolicy",
    "HistoryPolicy",
    "InvalidQoSProfileException",
    "LivelinessPolicy",
    "QoSDurabilityPolicy",
    "QoSHistoryPolicy",
    "QoSLivelinessPolicy",
    "QoSProfile",
    "QoSReliabilityPolicy",
    "ReliabilityPolicy",
    "qos_profile_sensor_data",
    "qos_profile_system_default",
]


class InvalidQoSProfileException(Exception):  # noqa: N818 - rclpy's name
    def __init__(self, *args: Any) -> None:
        Exception.__init__(self, "Invalid QoSProfile", *args)


class QoSPolicyEnum(IntEnum):
    @classmethod
    def short_keys(cls) -> list[str]:
        return [key.lower() for key in cls.__members__ if not key.startswith("RMW")]

    @classmethod
    def get_from_short_key(cls, name: str) -> int:
        return cls[name.upper()].value

    @property
    def short_key(self) -> str:
        return self.name.lower()


class HistoryPolicy(QoSPolicyEnum):
    SYSTEM_DEFAULT = 0
    KEEP_LAST = 1
    KEEP_ALL = 2
    UNKNOWN = 3


class ReliabilityPolicy(QoSPolicyEnum):
    SYSTEM_DEFAULT = 0
    RELIABLE = 1
    BEST_EFFORT = 2
    UNKNOWN = 3


class DurabilityPolicy(QoSPolicyEnum):
    SYSTEM_DEFAULT = 0
    TRANSIENT_LOCAL = 1
    VOLATILE = 2
    UNKNOWN = 3


class LivelinessPolicy(QoSPolicyEnum):
    SYSTEM_DEFAULT = 0
    AUTOMATIC = 1
    MANUAL_BY_TOPIC = 3
    UNKNOWN = 4


# Humble's deprecated aliases, still used in the wild.
QoSHistoryPolicy = HistoryPolicy
QoSReliabilityPolicy = ReliabilityPolicy
QoSDurabilityPolicy = DurabilityPolicy
QoSLivelinessPolicy = LivelinessPolicy

_DEFAULT = {
    "depth": 10,
    "reliability": ReliabilityPolicy.RELIABLE,
    "durability": DurabilityPolicy.VOLATILE,
    "lifespan": Duration(),
    "deadline": Duration(),
    "liveliness": LivelinessPolicy.SYSTEM_DEFAULT,
    "liveliness_lease_duration": Duration(),
    "avoid_ros_namespace_conventions": False,
}


class QoSProfile:
    """Define Quality of Service policies (the same constructor checks as Humble's)."""

    __slots__ = [
        "_avoid_ros_namespace_conventions",
        "_deadline",
        "_depth",
        "_durability",
        "_history",
        "_lifespan",
        "_liveliness",
        "_liveliness_lease_duration",
        "_reliability",
    ]

    def __init__(self, **kwargs: Any) -> None:
        assert all("_" + key in self.__slots__ for key in kwargs), (
            f"Invalid arguments passed to constructor: {kwargs.keys()!r}"
        )
        if "history" not in kwargs:
            if "depth" not in kwargs:
                raise InvalidQoSProfileException("History and/or depth settings are required.")
            kwargs["history"] = HistoryPolicy.KEEP_LAST
        self.history = kwargs["history"]
        if self.history == HistoryPolicy.KEEP_LAST and "depth" not in kwargs:
            raise InvalidQoSProfileException("History set to KEEP_LAST without a depth setting.")
        for name, default in _DEFAULT.items():
            setattr(self, name, kwargs.get(name, default))

    @property
    def history(self) -> HistoryPolicy:
        return self._history

    @history.setter
    def history(self, value: int) -> None:
        assert isinstance(value, int)
        self._history = HistoryPolicy(value)

    @property
    def reliability(self) -> ReliabilityPolicy:
        return self._reliability

    @reliability.setter
    def reliability(self, value: int) -> None:
        assert isinstance(value, int)
        self._reliability = ReliabilityPolicy(value)

    @property
    def durability(self) -> DurabilityPolicy:
        return self._durability

    @durability.setter
    def durability(self, value: int) -> None:
        assert isinstance(value, int)
        self._durability = DurabilityPolicy(value)

    @property
    def depth(self) -> int:
        return self._depth

    @depth.setter
    def depth(self, value: int) -> None:
        assert isinstance(value, int)
        self._depth = value

    @property
    def lifespan(self) -> Duration:
        return self._lifespan

    @lifespan.setter
    def lifespan(self, value: Duration) -> None:
        assert isinstance(value, Duration)
        self._lifespan = value

    @property
    def deadline(self) -> Duration:
        return self._deadline

    @deadline.setter
    def deadline(self, value: Duration) -> None:
        assert isinstance(value, Duration)
        self._deadline = value

    @property
    def liveliness(self) -> LivelinessPolicy:
        return self._liveliness

    @liveliness.setter
    def liveliness(self, value: int) -> None:
        assert isinstance(value, int)
        self._liveliness = LivelinessPolicy(value)

    @property
    def liveliness_lease_duration(self) -> Duration:
        return self._liveliness_lease_duration

    @liveliness_lease_duration.setter
    def liveliness_lease_duration(self, value: Duration) -> None:
        assert isinstance(value, Duration)
        self._liveliness_lease_duration = value

    @property
    def avoid_ros_namespace_conventions(self) -> bool:
        return self._avoid_ros_namespace_conventions

    @avoid_ros_namespace_conventions.setter
    def avoid_ros_namespace_conventions(self, value: bool) -> None:
        assert isinstance(value, bool)
        self._avoid_ros_namespace_conventions = value

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QoSProfile):
            return False
        return all(getattr(self, slot) == getattr(other, slot) for slot in self.__slots__)

    def __str__(self) -> str:
        return f"QoSProfile({', '.join(f'{slot[1:]}={getattr(self, slot)}' for slot in self.__slots__)})"

    __repr__ = __str__


qos_profile_sensor_data = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=5,
    reliability=ReliabilityPolicy.BEST_EFFORT,
    durability=DurabilityPolicy.VOLATILE,
)
qos_profile_system_default = QoSProfile(
    history=HistoryPolicy.SYSTEM_DEFAULT,
    depth=0,
    reliability=ReliabilityPolicy.SYSTEM_DEFAULT,
    durability=DurabilityPolicy.SYSTEM_DEFAULT,
)


def _effective(policy: IntEnum, system_default: IntEnum) -> IntEnum:
    return system_default if policy.value == 0 else policy


def _compatible(publisher_qos: QoSProfile, subscription_qos: QoSProfile) -> tuple[bool, str]:
    """Whether a publisher and a subscription talk (the DDS request/offer rules for the two policies
    that matter here; system default is reliable and volatile)."""
    offered_reliability = _effective(publisher_qos.reliability, ReliabilityPolicy.RELIABLE)
    requested_reliability = _effective(subscription_qos.reliability, ReliabilityPolicy.RELIABLE)
    if (
        offered_reliability == ReliabilityPolicy.BEST_EFFORT
        and requested_reliability == ReliabilityPolicy.RELIABLE
    ):
        return False, "ERROR: Best effort publisher and reliable subscription;"
    offered_durability = _effective(publisher_qos.durability, DurabilityPolicy.VOLATILE)
    requested_durability = _effective(subscription_qos.durability, DurabilityPolicy.VOLATILE)
    if (
        offered_durability == DurabilityPolicy.VOLATILE
        and requested_durability == DurabilityPolicy.TRANSIENT_LOCAL
    ):
        return False, "ERROR: Volatile publisher and transient local subscription;"
    return True, ""

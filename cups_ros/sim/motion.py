"""Analytic trajectories: a planar path (straight and arc segments) driven by a speed profile.

Poses are closed-form functions of time, so the pose at t + 1 frame (for exact optical flow) is as
cheap and exact as the pose at t.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cups_ros.sim.se3 import pose_ypr


@dataclass(frozen=True)
class SpeedProfile:
    """Arc length s(t): cruise at ``speed``; optionally start at ``start_time`` from rest with
    ``accel`` or brake with ``decel`` to stand still at arc length ``stop_at``."""

    speed: float
    stop_at: float | None = None
    decel: float = 3.0
    start_time: float | None = None
    accel: float = 1.5

    def distance(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        v = self.speed
        if self.start_time is not None:
            tau = np.maximum(t - self.start_time, 0.0)
            ramp = v / self.accel
            s = np.where(tau < ramp, 0.5 * self.accel * tau**2, 0.5 * v * ramp + v * (tau - ramp))
        else:
            s = v * t
        if self.stop_at is not None and v > 0:
            brake_distance = v * v / (2.0 * self.decel)
            s_brake = self.stop_at - brake_distance
            if self.start_time is None:
                t_brake = s_brake / v
                tau = np.clip(t - t_brake, 0.0, v / self.decel)
                braking = s_brake + v * tau - 0.5 * self.decel * tau**2
                s = np.where(t < t_brake, s, braking)
            else:
                s = np.minimum(s, self.stop_at)
        return s


@dataclass(frozen=True)
class Path:
    """Planar path from (x, z) with heading ``yaw`` (0 = +z, positive towards +x); segments are
    (length, curvature) pairs, curvature 0 for straight; beyond the last segment it goes straight."""

    x: float
    z: float
    yaw: float
    segments: tuple[tuple[float, float], ...] = ()

    def at(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x, z, yaw) at arc lengths s (negative s extends the first heading backwards)."""
        s = np.asarray(s, dtype=np.float64)
        x = np.full(s.shape, self.x)
        z = np.full(s.shape, self.z)
        yaw = np.full(s.shape, self.yaw)
        start = 0.0
        x0, z0, heading = self.x, self.z, self.yaw
        for length, curvature in (*self.segments, (np.inf, 0.0)):
            local = np.clip(s - start, 0.0, length) if np.isfinite(length) else np.maximum(s - start, 0.0)
            if start == 0.0:
                local = np.where(s < 0, s, local)  # backwards extension of the first heading
            active = (s >= start) | ((start == 0.0) & (s < 0))
            if abs(curvature) < 1e-9:
                xs = x0 + local * np.sin(heading)
                zs = z0 + local * np.cos(heading)
                hs = np.full(s.shape, heading)
            else:
                hs = heading + curvature * local
                xs = x0 + (np.cos(heading) - np.cos(hs)) / curvature
                zs = z0 + (np.sin(hs) - np.sin(heading)) / curvature
            x = np.where(active, xs, x)
            z = np.where(active, zs, z)
            yaw = np.where(active, hs, yaw)
            if not np.isfinite(length):
                break
            if abs(curvature) < 1e-9:
                x0, z0 = x0 + length * np.sin(heading), z0 + length * np.cos(heading)
            else:
                end_heading = heading + curvature * length
                x0 = x0 + (np.cos(heading) - np.cos(end_heading)) / curvature
                z0 = z0 + (np.sin(end_heading) - np.sin(heading)) / curvature
                heading = end_heading
            start += length
        return x, z, yaw


@dataclass(frozen=True)
class Trajectory:
    """An agent's ground-plane motion: pose(t) with its base at height ``base_height``."""

    path: Path
    speed: SpeedProfile
    base_height: float = 0.0

    def state(self, t: float) -> tuple[float, float, float, float]:
        """(x, z, yaw, travelled distance) at time t."""
        s = self.speed.distance(np.array([t]))
        x, z, yaw = self.path.at(s)
        return float(x[0]), float(z[0]), float(yaw[0]), float(s[0])

    def positions(self, times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x, z, yaw) arrays at many times, for conflict checks between agents."""
        return self.path.at(self.speed.distance(times))

    def pose(self, t: float) -> np.ndarray:
        x, z, yaw, _ = self.state(t)
        return pose_ypr((x, self.base_height, z), yaw)


@dataclass(frozen=True)
class EgoMotion:
    """Ego vehicle: forward speed, a gentle lateral weave (yaw rate) and small pitch/roll oscillations."""

    x0: float
    speed: float
    weave_amplitude: float = 0.25
    weave_period: float = 6.0
    pitch_amplitude: float = 0.006
    roll_amplitude: float = 0.004
    bounce_amplitude: float = 0.01
    phases: tuple[float, float, float, float] = field(default=(0.0, 0.0, 0.0, 0.0))

    def body_pose(self, t: float, mount_height: float) -> np.ndarray:
        omega = 2.0 * np.pi / self.weave_period
        p_weave, p_pitch, p_roll, p_bounce = self.phases
        x = self.x0 + self.weave_amplitude * np.sin(omega * t + p_weave)
        dx_dt = self.weave_amplitude * omega * np.cos(omega * t + p_weave)
        yaw = float(np.arctan2(dx_dt, self.speed))
        pitch = self.pitch_amplitude * np.sin(2.0 * np.pi * 0.9 * t + p_pitch)
        roll = self.roll_amplitude * np.sin(2.0 * np.pi * 0.6 * t + p_roll)
        height = mount_height + self.bounce_amplitude * np.sin(2.0 * np.pi * 1.3 * t + p_bounce)
        return pose_ypr((x, height, self.speed * t), yaw, pitch, roll)

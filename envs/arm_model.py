"""The robot-arm model of the manipulation tasks, built from MuJoCo primitives (no meshes).

The arm: a yaw turret, then three pitch joints (shoulder, elbow, wrist) — the same 4 effective
joints the JaxGCRL Franka tasks actuate (Panda joints 1, 2, 4, 6; the rest held fixed) — and a
parallel two-finger gripper whose fingers slide along the hand's lateral axis. Every joint is
driven by a position servo, and the arm bodies have gravity compensation so a servo holds its
target without sagging.

Why primitives rather than the Franka Panda: no PyPI package ships the Panda MJCF with its files
(the `mujoco-menagerie` package downloads the models from GitHub at run time), and mesh collisions
are the slowest part of MJX. Here everything collides through a short explicit list of contact
pairs between boxes and the table plane, which keeps one MJX step cheap.

Frames and sizes (metres): the table is the plane z = 0; the turret stands at the origin and the
shoulder is `SHOULDER_HEIGHT` above it; with all joints at 0 the arm points along +x. The pitch
joints turn about the link's y axis, so a positive angle tilts the next link *down*. The cube is
`CUBE_HALF` * 2 on a side, so a cube resting on the table has its centre at z = `CUBE_HALF`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

SHOULDER_HEIGHT = 0.3
UPPER_ARM = 0.33
FOREARM = 0.33
PALM_LENGTH = 0.04  # along the hand axis, from the wrist joint
FINGER_HALF = np.array([0.03, 0.006, 0.015])  # pad half-sizes: along the hand, grip axis, across
GRIP_OFFSET = PALM_LENGTH + FINGER_HALF[0]  # wrist joint → grip site (the middle of the pads)
CUBE_HALF = 0.025
CUBE_MASS = 0.1

ARM_JOINTS = ("yaw", "shoulder", "elbow", "wrist")
# Joint ranges (rad), also the servo target ranges. They cover every hand-down pose over the
# tasks' start and goal regions (a test checks this) with a little margin and not much more, so
# that random actions keep the hand in front of the robot and above the work area.
ARM_RANGES = np.array([(-1.0, 1.0), (-1.5, 0.4), (0.0, 2.5), (-0.6, 2.0)])
FINGER_RANGE = (0.0, 0.045)  # slide of each finger from closed (0: pads touch) to open
# Servo stiffness (N·m/rad for the arm, N/m for the fingers); critically damped (dampratio 1).
ARM_KP = (60.0, 120.0, 80.0, 30.0)
# Torque caps (N·m): like a real arm's, they bound how hard and fast the hand can hit or press.
ARM_TORQUE = (15.0, 30.0, 20.0, 8.0)
FINGER_KP = 100.0
FINGER_FORCE = 10.0  # N, cap on the squeeze of each finger

TIMESTEP = 0.005  # s, physics step; an agent step is `n_frames` of these


@dataclasses.dataclass(frozen=True)
class Bins:
    """Two open bins side by side along y, sharing a divider; the cube starts in `source_center`
    and goals lie in `target_center`'s bin. `inner_half` is the half-size of each bin's floor."""

    source_center: tuple[float, float] = (0.42, -0.14)
    target_center: tuple[float, float] = (0.42, 0.14)
    inner_half: float = 0.12
    wall_half_thickness: float = 0.01
    wall_height: float = 0.07

    def wall_boxes(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(centre, half-size) of the five walls: two long sides, two ends, one divider."""
        (sx, sy), (tx, ty) = self.source_center, self.target_center
        if not np.isclose(sx, tx):
            raise ValueError("bins must be side by side along y (same x centre)")
        t, h, inner = self.wall_half_thickness, self.wall_height / 2, self.inner_half
        y_lo, y_hi = min(sy, ty) - inner - 2 * t, max(sy, ty) + inner + 2 * t
        y_mid, y_half = (y_lo + y_hi) / 2, (y_hi - y_lo) / 2
        boxes = []
        for x in (sx - inner - t, sx + inner + t):  # long walls
            boxes.append((np.array([x, y_mid, h]), np.array([t, y_half, h])))
        for y in (y_lo + t, y_hi - t):  # end walls
            boxes.append((np.array([sx, y, h]), np.array([inner, t, h])))
        divider_y = (sy + ty) / 2
        boxes.append((np.array([sx, divider_y, h]), np.array([inner, t, h])))
        return boxes


def _fmt(values) -> str:
    return " ".join(f"{float(v):.6g}" for v in np.atleast_1d(values))


def arm_xml(with_cube: bool, bins: Bins | None = None) -> str:
    """MJCF of the arm on a table, optionally with a free cube and with bins.

    Contacts are an explicit list of pairs (every geom has contype = conaffinity = 0): cube–table
    and cube–finger pads with friction; the pads against the table (frictionless, only to stop the
    fingers going through it); the cube against the bin walls (frictionless). The arm links and
    the palm touch nothing, which is what makes a step cheap; the pads reach below everything else
    of the hand, so they are what meets the cube and the table.
    """
    (yaw, shoulder, elbow, wrist) = ARM_RANGES
    fx, fy, fz = FINGER_HALF
    finger_body_x = PALM_LENGTH + fx
    parts = [
        '<mujoco model="crl_arm">',
        '  <compiler angle="radian" autolimits="true"/>',
        f'  <option timestep="{TIMESTEP}" integrator="implicitfast" iterations="6"'
        ' ls_iterations="8"/>',
        "  <default>",
        '    <geom contype="0" conaffinity="0" condim="3" friction="1 0.005 0.0001"'
        ' rgba="0.55 0.6 0.7 1"/>',
        '    <joint damping="0.1" armature="0.01"/>',
        "  </default>",
        "  <worldbody>",
        '    <light pos="0 0 2" dir="0 0 -1"/>',
        '    <geom name="table" type="plane" size="1 1 0.05" rgba="0.85 0.85 0.8 1"/>',
        '    <geom name="pedestal" type="cylinder" size="0.07 0.05" pos="0 0 0.05"/>',
        '    <body name="turret" pos="0 0 0.1" gravcomp="1">',
        f'      <joint name="yaw" axis="0 0 1" range="{_fmt(yaw)}"/>',
        f'      <geom type="capsule" fromto="0 0 0 0 0 {SHOULDER_HEIGHT - 0.1:.6g}" size="0.045"'
        ' mass="2"/>',
        f'      <body name="upper_arm" pos="0 0 {SHOULDER_HEIGHT - 0.1:.6g}" gravcomp="1">',
        f'        <joint name="shoulder" axis="0 1 0" range="{_fmt(shoulder)}"/>',
        f'        <geom type="capsule" fromto="0 0 0 {UPPER_ARM} 0 0" size="0.035" mass="1.5"/>',
        f'        <body name="forearm" pos="{UPPER_ARM} 0 0" gravcomp="1">',
        f'          <joint name="elbow" axis="0 1 0" range="{_fmt(elbow)}"/>',
        f'          <geom type="capsule" fromto="0 0 0 {FOREARM} 0 0" size="0.03" mass="1"/>',
        f'          <body name="hand" pos="{FOREARM} 0 0" gravcomp="1">',
        f'            <joint name="wrist" axis="0 1 0" range="{_fmt(wrist)}"/>',
        f'            <geom name="palm" type="box" pos="{PALM_LENGTH / 2} 0 0"'
        f' size="{PALM_LENGTH / 2} 0.06 0.022" mass="0.3"/>',
        f'            <site name="grip" pos="{GRIP_OFFSET} 0 0" size="0.01" rgba="1 0 0 1"/>',
    ]
    for side, sign in (("left", 1), ("right", -1)):
        parts += [
            f'            <body name="{side}_finger" pos="{finger_body_x} {sign * fy} 0"'
            ' gravcomp="1">',
            f'              <joint name="{side}_finger" type="slide" axis="0 {sign} 0"'
            f' range="{_fmt(FINGER_RANGE)}"/>',
            f'              <geom name="{side}_pad" type="box" size="{_fmt(FINGER_HALF)}"'
            ' mass="0.05" rgba="0.3 0.3 0.35 1"/>',
            "            </body>",
        ]
    parts += ["          </body>", "        </body>", "      </body>", "    </body>"]
    if with_cube:
        parts += [
            f'    <body name="cube" pos="0.42 0 {CUBE_HALF}">',
            '      <freejoint name="cube"/>',
            f'      <geom name="cube" type="box" size="{CUBE_HALF} {CUBE_HALF} {CUBE_HALF}"'
            f' mass="{CUBE_MASS}" rgba="0.9 0.5 0.1 1"/>',
            "    </body>",
        ]
    walls = bins.wall_boxes() if bins is not None else []
    for i, (centre, half) in enumerate(walls):
        parts.append(
            f'    <geom name="wall_{i}" type="box" pos="{_fmt(centre)}" size="{_fmt(half)}"'
            ' rgba="0.5 0.5 0.55 1"/>'
        )
    parts.append("  </worldbody>")

    pairs = ['    <pair geom1="left_pad" geom2="table" condim="1"/>',
             '    <pair geom1="right_pad" geom2="table" condim="1"/>']
    if with_cube:
        pairs += [
            '    <pair geom1="cube" geom2="table" condim="3" friction="1 1 0.005 0.0001 0.0001"/>',
            '    <pair geom1="cube" geom2="left_pad" condim="3" friction="1.5 1.5 0.005 0.0001'
            ' 0.0001"/>',
            '    <pair geom1="cube" geom2="right_pad" condim="3" friction="1.5 1.5 0.005 0.0001'
            ' 0.0001"/>',
        ]
        pairs += [f'    <pair geom1="cube" geom2="wall_{i}" condim="1"/>' 
                  for i in range(len(walls))]
    parts += ["  <contact>", *pairs, "  </contact>", "  <actuator>"]
    for name, kp, torque, (lo, hi) in zip(ARM_JOINTS, ARM_KP, ARM_TORQUE, ARM_RANGES):
        parts.append(
            f'    <position name="{name}" joint="{name}" kp="{kp}" dampratio="1"'
            f' ctrlrange="{lo:.6g} {hi:.6g}" forcerange="{-torque} {torque}"/>'
        )
    for side in ("left", "right"):
        parts.append(
            f'    <position name="{side}_finger" joint="{side}_finger" kp="{FINGER_KP}"'
            f' dampratio="1" ctrlrange="{_fmt(FINGER_RANGE)}"'
            f' forcerange="{-FINGER_FORCE} {FINGER_FORCE}"/>'
        )
    parts += ["  </actuator>", "</mujoco>"]
    return "\n".join(parts)


def grip_down_ik(position: np.ndarray) -> np.ndarray:
    """Arm joint angles [yaw, shoulder, elbow, wrist] that put the grip site at `position` (world,
    [3]) with the hand pointing straight down (elbow up). Raises ValueError if out of reach.

    Closed form: yaw aims the arm plane at the point; the wrist then sits GRIP_OFFSET above the
    grip site, and shoulder/elbow are the two-link solution for the wrist; the wrist angle makes
    the three pitches sum to pi/2 (straight down).
    """
    x, y, z = np.asarray(position, dtype=float)
    yaw = np.arctan2(y, x)
    reach = np.hypot(x, y)
    dz = z + GRIP_OFFSET - SHOULDER_HEIGHT
    dist = np.hypot(reach, dz)
    if not abs(UPPER_ARM - FOREARM) < dist < UPPER_ARM + FOREARM:
        raise ValueError(f"grip position {position} is out of the arm's reach")
    below = np.arctan2(-dz, reach)  # direction to the wrist, below horizontal
    inner = np.arccos((UPPER_ARM**2 + FOREARM**2 - dist**2) / (2 * UPPER_ARM * FOREARM))
    lift = np.arccos((UPPER_ARM**2 + dist**2 - FOREARM**2) / (2 * UPPER_ARM * dist))
    shoulder = below - lift
    elbow = np.pi - inner
    wrist = np.pi / 2 - shoulder - elbow
    return np.array([yaw, shoulder, elbow, wrist])


def joint_action(angles: np.ndarray) -> np.ndarray:
    """The arm part of an action in [-1, 1] whose servo targets are `angles` (inverse of the
    env's action scaling); raises ValueError if an angle is outside its joint range."""
    lo, hi = ARM_RANGES[:, 0], ARM_RANGES[:, 1]
    angles = np.asarray(angles, dtype=float)
    if np.any(angles < lo - 1e-9) or np.any(angles > hi + 1e-9):
        raise ValueError(f"joint angles {angles} outside the ranges {ARM_RANGES.tolist()}")
    return 2 * (angles - lo) / (hi - lo) - 1

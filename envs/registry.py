"""Name → environment factory. Factories are import paths so that `import envs` stays cheap and
physics backends (brax, mujoco) are imported only when one of their envs is made."""

from __future__ import annotations

import difflib
import importlib
from typing import Any

from envs.base import GoalEnv

# name -> "module:callable"; the callable takes keyword overrides and returns a GoalEnv.
_FACTORIES: dict[str, str] = {
    "point_open": "envs.point_maze:make_open",
    "point_u": "envs.point_maze:make_u",
    "point_big": "envs.point_maze:make_big",
    "point_hardest": "envs.point_maze:make_hardest",
    # Serpentine mazes for CPU depth studies (crl's own), evaluated on their far corridor.
    "point_snake3": "envs.point_maze:make_snake3",
    "point_snake3_eval": "envs.point_maze:make_snake3_eval",
    "point_snake5": "envs.point_maze:make_snake5",
    "point_snake5_eval": "envs.point_maze:make_snake5_eval",
    # Manipulation (MJX): a 4-joint arm with a gripper, and goal-conditioned reacher/pusher.
    "arm_reach": "envs.manipulation:make_reach",
    "arm_push_easy": "envs.manipulation:make_push_easy",
    "arm_push_hard": "envs.manipulation:make_push_hard",
    "arm_binpick_easy": "envs.manipulation:make_binpick_easy",
    "arm_binpick_hard": "envs.manipulation:make_binpick_hard",
    "arm_grasp": "envs.manipulation:make_grasp",
    "reacher": "envs.classic:make_reacher",
    "pusher": "envs.classic:make_pusher",
    # Locomotion (brax ant/humanoid; walls generated from maze_layouts).
    "ant": "envs.locomotion:make_ant",
    "ant_ball": "envs.locomotion:make_ant_ball",
    "ant_push": "envs.locomotion:make_ant_push",
    "ant_u_maze": "envs.locomotion:make_ant_u_maze",
    "ant_u4_maze": "envs.locomotion:make_ant_u4_maze",
    "ant_u5_maze": "envs.locomotion:make_ant_u5_maze",
    "ant_big_maze": "envs.locomotion:make_ant_big_maze",
    "ant_hardest_maze": "envs.locomotion:make_ant_hardest_maze",
    # Evaluation versions (the references' `*_eval` layouts): crl evaluates `<env>_eval` when
    # it is registered.
    "ant_u_maze_eval": "envs.locomotion:make_ant_u_maze_eval",
    "ant_u4_maze_eval": "envs.locomotion:make_ant_u4_maze_eval",
    "ant_u5_maze_eval": "envs.locomotion:make_ant_u5_maze_eval",
    "ant_big_maze_eval": "envs.locomotion:make_ant_big_maze_eval",
    "humanoid": "envs.locomotion:make_humanoid",
    "humanoid_u_maze": "envs.locomotion:make_humanoid_u_maze",
    "humanoid_big_maze": "envs.locomotion:make_humanoid_big_maze",
    "humanoid_hardest_maze": "envs.locomotion:make_humanoid_hardest_maze",
    "humanoid_u_maze_eval": "envs.locomotion:make_humanoid_u_maze_eval",
    "humanoid_big_maze_eval": "envs.locomotion:make_humanoid_big_maze_eval",
}


class UnknownEnvError(ValueError):
    """Raised for a name that is not registered."""


def names() -> list[str]:
    """All registered environment names, sorted."""
    return sorted(_FACTORIES)


def check_name(name: str) -> None:
    """Raise UnknownEnvError with the close matches and the full list if `name` is unknown."""
    if name not in _FACTORIES:
        close = difflib.get_close_matches(name, names(), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownEnvError(
            f"unknown env {name!r}.{hint} Registered envs: {', '.join(names())}"
        )


def make(name: str, **overrides: Any) -> GoalEnv:
    """Build the registered environment `name`; keyword overrides go to its factory
    (e.g. `episode_length=200`)."""
    check_name(name)
    module_name, attr = _FACTORIES[name].split(":")
    factory = getattr(importlib.import_module(module_name), attr)
    env = factory(**overrides)
    env.name = name
    return env


def register(name: str, factory: str) -> None:
    """Add `name` → factory ("module:callable", imported when the env is made). Refuses to
    replace a registered name (unregister it first)."""
    if name in _FACTORIES:
        raise ValueError(f"env {name!r} is already registered ({_FACTORIES[name]})")
    if factory.count(":") != 1:
        raise ValueError(f"factory must be 'module:callable', got {factory!r}")
    _FACTORIES[name] = factory


def unregister(name: str) -> None:
    """Remove a registered name (e.g. one a test registered)."""
    check_name(name)
    del _FACTORIES[name]


EVAL_SUFFIX = "_eval"


def default_eval_env(name: str) -> str:
    """The env `name` is evaluated on by default: the paper's evaluation variant
    `{name}_eval` where one is registered, else `name` itself."""
    check_name(name)
    candidate = name + EVAL_SUFFIX
    return candidate if candidate in _FACTORIES else name

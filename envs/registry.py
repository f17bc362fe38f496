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

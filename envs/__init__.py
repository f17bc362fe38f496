"""Goal-conditioned environments behind one registry: `envs.make(name)`."""

from envs.base import EnvState, GoalEnv
from envs.registry import UnknownEnvError, check_name, make, names

__all__ = ["EnvState", "GoalEnv", "UnknownEnvError", "check_name", "make", "names"]

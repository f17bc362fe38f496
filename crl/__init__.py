"""crl: deep contrastive reinforcement learning in JAX."""

from crl.agent import AgentState, Batch, CRLAgent
from crl.config import PRESETS, ConfigError, TrainConfig, validate
from crl.train import Trainer, TrainState, make_trainer

__all__ = [
    "AgentState", "Batch", "CRLAgent", "ConfigError", "PRESETS", "TrainConfig", "TrainState",
    "Trainer", "make_trainer", "validate",
]

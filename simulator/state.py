"""One simulator's live state: settings, record of messages, dice and callback sender."""

from __future__ import annotations

import copy
import dataclasses

from simulator.callbacks import CallbackSender
from simulator.config import SimConfig
from simulator.faults import FaultEngine
from simulator.store import Store


class SimState:
    """What the route handlers share; `reset()` returns to the settings the process started with."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self._initial = copy.deepcopy(config)
        self.store = Store()
        self.faults = FaultEngine(config)
        self.callbacks = CallbackSender(config, self.faults)

    def reset(self) -> None:
        """Forget every message and count, and undo run-time configuration."""
        for f in dataclasses.fields(SimConfig):
            setattr(self.config, f.name, copy.deepcopy(getattr(self._initial, f.name)))
        self.store.reset()
        self.faults.reseed()

"""taskexec: the Task Execution Layer's shared core (config, names, models, state machine)."""

__version__ = "0.1.0"

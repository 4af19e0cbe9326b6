"""The composition root: config loading now; the HTTP API, signals and wiring come later.

This is the only layer that knows every other one. It reads the TOML config
(:mod:`procvisor.daemon.config`) into validated models that the capabilities are built from;
the capabilities themselves never parse files.
"""

from procvisor.daemon.config import (
    Config,
    ConfigError,
    ConfigProblem,
    Service,
    check_runtime,
    find_config,
    load_config,
    parse_config,
    state_dir,
)

__all__ = [
    "Config",
    "ConfigError",
    "ConfigProblem",
    "Service",
    "check_runtime",
    "find_config",
    "load_config",
    "parse_config",
    "state_dir",
]

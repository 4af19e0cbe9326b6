"""The composition root: the config, the daemon that wires every layer, and its HTTP API.

This is the only layer that knows every other one. It reads the TOML config
(:mod:`procvisor.daemon.config`) into validated models that the capabilities are built from;
the capabilities themselves never parse files. Nothing is imported here, so that the CLI can
find a running daemon (:mod:`procvisor.daemon._files`) without loading pydantic and the models.
"""

"""Configuration of a node: ``from raftkv.config import load_config, ConfigError, ...``.

Modules, one job each:

- :mod:`.node`: :class:`NodeConfig` / :class:`NodeSpec`, defaults, flags over the file, per-node
  and whole-cluster files, addresses;
- :mod:`.tuning`: :class:`RaftTuning` (the ``raft:`` section, validated once) and
  :func:`core_config`, the one conversion of its milliseconds into the core's ticks;
- :mod:`.yaml_file`: strict YAML reading;
- :mod:`.errors`: :class:`ConfigError`, the one-line error kvnode prints.
"""
from __future__ import annotations

from .errors import ConfigError
from .node import (DEFAULT_CLUSTER_FILE, DEFAULT_DATA_DIR, LOG_LEVELS, NodeConfig, NodeSpec, advertise,
                   cluster_client_addresses, load_cluster, load_config, normalize_address, split_address)
from .tuning import RaftTuning, core_config

__all__ = [
    "ConfigError", "RaftTuning", "NodeSpec", "NodeConfig", "core_config",
    "load_config", "load_cluster", "cluster_client_addresses",
    "normalize_address", "split_address", "advertise",
    "DEFAULT_DATA_DIR", "DEFAULT_CLUSTER_FILE", "LOG_LEVELS",
]

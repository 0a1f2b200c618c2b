"""The sweep config: its names (:mod:`.names`), schema (:mod:`.schema`) and loading (:mod:`.loading`).

Owns: what a sweep may ask for and how it is spelled. May import: ``search.cluster``, ``models``,
``kernels`` (never the engine, results, selection or the CLI).
"""

from search.config.loading import absolutize_paths, dump_config, load_config, parse_config
from search.config.names import *  # noqa: F403
from search.config.names import __all__ as _names_all
from search.config.schema import *  # noqa: F403
from search.config.schema import __all__ as _schema_all

__all__ = [*_names_all, *_schema_all, "parse_config", "load_config", "absolutize_paths", "dump_config"]

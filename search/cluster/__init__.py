"""Cluster launching: connecting drivers to Ray clusters, starting local ones, shared storage.

Owns: :mod:`.connect` (``--address``, token auth), :mod:`.storage` (URIs through ``pyarrow.fs``,
localising inputs on each node), :mod:`.local` (a multi-node Ray cluster on one machine). May import:
``models`` and ``kernels`` only (it sits below the config, results and engine that use it).
"""

from search.cluster.connect import *  # noqa: F403
from search.cluster.connect import __all__ as _connect_all
from search.cluster.local import *  # noqa: F403
from search.cluster.local import __all__ as _local_all
from search.cluster.storage import *  # noqa: F403
from search.cluster.storage import __all__ as _storage_all

__all__ = [*_connect_all, *_storage_all, *_local_all]

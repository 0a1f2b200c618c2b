"""Sequential bottleneck adapters: config, layer, insertion into AdapterSites."""

from models.peft.adapter.config import AdapterConfig
from models.peft.adapter.layer import BottleneckAdapter
from models.peft.adapter.model import apply_adapters

__all__ = ["AdapterConfig", "BottleneckAdapter", "apply_adapters"]

"""Data: the PyBullet scene generator, shard storage and dataset readers.

Names are imported lazily so the generator's worker processes do not pay for importing torch.
"""

_LAZY = {
    "DatasetError": "slotmatch.data.shards",
    "ShardVideoDataset": "slotmatch.data.dataset",
    "open_dataset": "slotmatch.data.dataset",
    "PRESETS": "slotmatch.data.presets",
    "get_preset": "slotmatch.data.presets",
}
__all__ = list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)

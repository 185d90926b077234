import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """A small movi-c-like dataset: 6 train and 3 validation videos, 6 frames at 32x32, 2 videos per shard."""
    from slotmatch.data.generate import GenerateArgs, generate_dataset

    root = str(tmp_path_factory.mktemp("data") / "tiny")
    args = GenerateArgs(preset="movi-c-like", num_train=6, num_val=3, frames=6, size=32, seed=3, videos_per_shard=2)
    generate_dataset(root, args, workers=1, progress=False)
    return root

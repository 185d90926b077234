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


@pytest.fixture(scope="session")
def flow_dataset(tmp_path_factory):
    """2 train and 1 validation movi-c-like videos with depth and optical flow, 4 frames at 32x32."""
    from slotmatch.data.generate import GenerateArgs, generate_dataset

    root = str(tmp_path_factory.mktemp("flow") / "d")
    generate_dataset(root, GenerateArgs(preset="movi-c-like", num_train=2, num_val=1, frames=4, size=32, seed=2,
                                        with_depth=True, with_flow=True), workers=1, progress=False)
    return root


def tiny_config(data_path: str, **train) -> dict:
    """A config small enough to train a few steps in seconds on a CPU."""
    from slotmatch.config import load_config, merge

    cfg = load_config("movi-c-like")
    return merge(cfg, {
        "data": {"path": data_path, "size": 32, "clip_length": 2, "batch_size": 2, "val_batch_size": 2,
                 "num_workers": 0},
        "model": {"encoder": {"name": "cnn", "channels": 8, "num_layers": 2, "patch_size": 4}, "img_size": 32,
                  "num_slots": 4, "slot_dim": 16, "mlp_hidden": 16, "decoder_hidden": [32, 32]},
        "student": {"encoder": {"name": "cnn", "channels": 4, "num_layers": 2, "patch_size": 4},
                    "mlp_hidden": 8, "decoder_hidden": [16]},
        "train": {"max_steps": 4, "val_every": 2, "checkpoint_every": 2, "warmup_steps": 2, "num_val_videos": 2,
                  "log_every": 1, **train},
    })


@pytest.fixture(scope="session")
def tiny_teacher_run(tiny_dataset, tmp_path_factory):
    """A tiny teacher trained 4 steps (validated at steps 2 and 4): (config, run dir, last checkpoint)."""
    from slotmatch.train import train

    run = str(tmp_path_factory.mktemp("runs") / "tiny-teacher")
    cfg = tiny_config(tiny_dataset, max_steps=4, val_every=2)
    return cfg, run, train(cfg, run, progress=False)

"""Load slotmatch models from Lightning checkpoints (.ckpt) or exported weights (.safetensors), safely.

A .ckpt is read with `torch.load(weights_only=True)`: no pickled code runs. Its `hyper_parameters`
hold the full config; a .safetensors export stores the model config as JSON in its metadata.
"""

from __future__ import annotations

import copy
import json
import os

import torch

from slotmatch.models import build_model

FORMAT = "slotmatch-model-v1"


class CheckpointError(RuntimeError):
    """Not a slotmatch checkpoint, corrupt, or from another config; the message names the file."""


def read_checkpoint(path: str) -> dict:
    """Raw checkpoint dict of a .ckpt, loaded with weights_only=True."""
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: checkpoint file does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # zipfile, pickle and unpickler errors all mean "not a checkpoint we can read"
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or \
            ckpt.get("hyper_parameters", {}).get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a slotmatch checkpoint (no slotmatch config inside)")
    return ckpt


def _model_state(state_dict: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def load_model(path: str, which: str = "model", device: str | torch.device = "cpu"):
    """Build the model stored in `path` and load its weights; returns (model in eval mode, config dict).

    which: "model" (the trained model: the teacher of a `train` run, the student of a `distill` run)
    or "teacher" (the frozen teacher inside a distillation checkpoint).
    """
    if path.endswith(".safetensors"):
        if which != "model":
            raise CheckpointError(f"{path}: exported weights hold one model; there is no {which} inside")
        state, cfg = _read_safetensors(path)
        model_cfg = cfg["model"]
    else:
        ckpt = read_checkpoint(path)
        cfg = ckpt["hyper_parameters"]["cfg"]
        model_cfg = ckpt["hyper_parameters"].get(f"{which}_cfg")
        if model_cfg is None:
            raise CheckpointError(f"{path}: holds no {which} model")
        state = _model_state(ckpt["state_dict"], f"{which}.")
    model = build_model_for_state(model_cfg, state, path)
    return model.to(device).eval(), cfg


def build_model_for_state(model_cfg: dict, state: dict, path: str):
    """Build a model for a saved state dict; the encoder's weights come from the state when it has them."""
    model_cfg = copy.deepcopy(model_cfg)
    has_encoder = any(k.startswith("encoder.") for k in state)
    if has_encoder and isinstance(model_cfg.get("encoder"), dict) and "weights" in model_cfg["encoder"]:
        model_cfg["encoder"] = self_contained_encoder(model_cfg["encoder"], path)
        model_cfg["encoder"]["weights"] = None  # the checkpoint carries them: no file or hub needed
    model = build_model(model_cfg)
    missing, unexpected = model.load_state_dict(state, strict=False)
    pretrained = isinstance(model_cfg.get("encoder"), dict) and model_cfg["encoder"].get("weights") is not None
    # an export without the encoder is complete only when the encoder's weights come from a file or the hub
    missing = [k for k in missing if not (k.startswith("encoder.") and not has_encoder and pretrained)]
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not fit the model of its config "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model


def self_contained_encoder(encoder_cfg: dict, path: str) -> dict:
    """The encoder config with what its weights file adds to it written in: a readout encoder's pretext (the layout of
    its head), read from the file's metadata, so the model can be built from a checkpoint alone."""
    enc = dict(encoder_cfg)
    if enc.get("readout") and not enc.get("pretext"):
        from slotmatch.models.encoder import safetensors_metadata

        weights = enc.get("weights")
        if not weights or not os.path.isfile(str(weights)):
            raise CheckpointError(f"{path}: its encoder is read through the pretext head of {weights}, which is not on "
                                  f"this machine and names the head's layout; export the model with `slotmatch export` "
                                  f"where it is (exports carry it), or copy the file")
        enc["pretext"] = safetensors_metadata(weights).get("pretext")
    return enc


def _read_safetensors(path: str) -> tuple[dict, dict]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    if not os.path.exists(path):
        raise CheckpointError(f"{path}: weights file does not exist")
    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
    if meta.get("format") != FORMAT or "config" not in meta:
        raise CheckpointError(f"{path}: not a slotmatch weights file (no slotmatch config in its metadata)")
    return {k: v.float() for k, v in state.items()}, json.loads(meta["config"])


def current_umask() -> int:
    """The process's umask (os.umask can only be read by setting it, so it is set back at once)."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


def save_safetensors(tensors: dict, path: str, metadata: dict) -> None:
    """safetensors' save_file, the file's permissions then set as the umask says: save_file writes through a private
    temporary file, which would leave the weights readable by their owner alone (mode 0600)."""
    from safetensors.torch import save_file

    save_file(tensors, path, metadata=metadata)
    os.chmod(path, 0o666 & ~current_umask())


def export_safetensors(path: str, out: str, dtype: torch.dtype = torch.float16, include_encoder: bool = True,
                       which: str = "model") -> str:
    """Write the trained model of checkpoint `path` as small safetensors weights (fp16 by default); which: "model"
    (the teacher of a `train` run, the student of a `distill` run) or "teacher" (a distillation's frozen teacher).
    The file holds the model's config, so `evaluate`, `segment` and `distill --teacher` read it alone."""
    if not out.endswith(".safetensors"):
        raise ValueError(f"{out}: name the export .safetensors (the loaders tell the formats apart by it)")
    if path.endswith(".safetensors"):
        raise CheckpointError(f"{path}: already exported weights; export reads a .ckpt of a train or distill run")
    model_cfg = read_checkpoint(path)["hyper_parameters"].get(f"{which}_cfg")
    if model_cfg is None:
        raise CheckpointError(f"{path}: holds no {which} model")
    if isinstance(model_cfg.get("encoder"), dict):
        model_cfg = {**model_cfg, "encoder": self_contained_encoder(model_cfg["encoder"], path)}
    model, _ = load_model(path, which)
    state = {k: v.to(dtype).contiguous() for k, v in model.state_dict().items()
             if include_encoder or not k.startswith("encoder.")}
    if os.path.dirname(out):
        os.makedirs(os.path.dirname(out), exist_ok=True)
    save_safetensors(state, out, metadata={"format": FORMAT, "config": json.dumps({"model": model_cfg})})
    return out

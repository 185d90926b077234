"""YAML configs: load by name or path, apply `key.sub=value` overrides from the command line."""

from __future__ import annotations

import copy
import os

import yaml

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "configs")


def config_path(name_or_path: str) -> str:
    """A config file path: the argument itself if it exists, else a bundled config called that."""
    if os.path.isfile(name_or_path):
        return name_or_path
    bundled = os.path.join(CONFIG_DIR, name_or_path if name_or_path.endswith(".yaml") else name_or_path + ".yaml")
    if os.path.exists(bundled):
        return bundled
    names = sorted(f[:-5] for f in os.listdir(CONFIG_DIR) if f.endswith(".yaml"))
    raise FileNotFoundError(f"{name_or_path}: no such config file or bundled config (bundled: {', '.join(names)})")


def load_config(name_or_path: str, overrides: list[str] | None = None) -> dict:
    """Read a YAML config (following `base: other.yaml` inheritance) and apply overrides."""
    path = config_path(name_or_path)
    try:
        with open(path) as f:
            cfg = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from e
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: a config must be a YAML mapping")
    base = cfg.pop("base", None)
    if base is not None:
        parent = load_config(os.path.join(os.path.dirname(path), base))
        cfg = merge(parent, cfg)
    return apply_overrides(cfg, overrides or [])


def merge(base: dict, update: dict) -> dict:
    """Recursive dict merge: `update` wins; nested mappings merge key by key."""
    out = copy.deepcopy(base)
    for k, v in update.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def apply_overrides(cfg: dict, overrides: list[str]) -> dict:
    """Apply `a.b.c=value` strings (value parsed as YAML) to a copy of cfg."""
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} is not of the form key.sub=value")
        node = cfg
        parts = key.split(".")
        for p in parts[:-1]:
            if not isinstance(node.setdefault(p, {}), dict):
                raise ValueError(f"override {item!r}: {p} is not a section")
            node = node[p]
        node[parts[-1]] = parse_value(value)
    return cfg


def parse_value(text: str):
    """A command-line value as YAML, except that numbers like `1e-3` (a string to YAML 1.1) are floats."""
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value

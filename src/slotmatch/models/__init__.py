"""Model modules of slotmatch: pure PyTorch, no training loop, data or CLI code here."""

from .decoder import MLPDecoder
from .encoder import (
    CNNEncoder,
    Encoder,
    TimmViTEncoder,
    WeightsNotFoundError,
    build_encoder,
    load_state_dict_file,
    load_timm_weights,
    make_target,
    pixel_patch_target,
    target_dim,
)
from .initializer import FixedLearnedInit
from .predictor import TransformerPredictor
from .slot_attention import SlotAttention
from .slotcontrast import (
    PAPER_PRESETS,
    SlotContrast,
    SlotContrastConfig,
    build_model,
    config_to_dict,
    count_parameters,
)

__all__ = [
    "CNNEncoder", "Encoder", "FixedLearnedInit", "MLPDecoder", "PAPER_PRESETS", "SlotAttention",
    "SlotContrast", "SlotContrastConfig", "TimmViTEncoder", "TransformerPredictor",
    "WeightsNotFoundError", "build_encoder", "build_model", "config_to_dict", "count_parameters",
    "load_state_dict_file", "load_timm_weights", "make_target", "pixel_patch_target", "target_dim",
]

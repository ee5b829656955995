"""Encoders by modality kind, fusions, and the encode/fuse multimodal model."""

from .encoders import ENCODERS, create_encoder
from .fusion import FUSIONS, create_fusion
from .model import MultimodalModel

__all__ = ["ENCODERS", "FUSIONS", "MultimodalModel", "create_encoder", "create_fusion"]

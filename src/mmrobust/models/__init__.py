"""Encoders by modality kind, fusions, and the encode/fuse multimodal model."""

from .encoders import ENCODERS, create_encoder
from .fusion import FUSIONS, create_fusion
from .model import MultimodalModel
from .tokens import Tokens

__all__ = ["ENCODERS", "FUSIONS", "MultimodalModel", "Tokens", "create_encoder", "create_fusion"]

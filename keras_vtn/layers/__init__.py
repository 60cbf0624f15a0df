"""Public building blocks shared by every model family."""

from keras_vtn.layers.attention import MultiHeadSelfAttention, scaled_dot_product_attention
from keras_vtn.layers.embedding import (
    ClassToken,
    PatchEmbedding,
    PositionEmbedding,
    TubeletEmbedding,
)
from keras_vtn.layers.linformer import LinformerAttention
from keras_vtn.layers.sliding_window import SlidingWindowAttention
from keras_vtn.layers.transformer import DropPath, MLPBlock, TransformerBlock

__all__ = [
    "ClassToken",
    "DropPath",
    "LinformerAttention",
    "MLPBlock",
    "MultiHeadSelfAttention",
    "PatchEmbedding",
    "PositionEmbedding",
    "SlidingWindowAttention",
    "TransformerBlock",
    "TubeletEmbedding",
    "scaled_dot_product_attention",
]

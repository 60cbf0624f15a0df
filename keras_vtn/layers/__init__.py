"""Public building blocks shared by every model family."""

from keras_vtn.layers.attention import MultiHeadSelfAttention, scaled_dot_product_attention
from keras_vtn.layers.conv import GroupedConv2D
from keras_vtn.layers.embedding import (
    ClassToken,
    PatchEmbedding,
    PositionEmbedding,
    TubeletEmbedding,
)
from keras_vtn.layers.factorised import (
    FactorisedDotProductAttention,
    FactorisedSelfAttentionBlock,
)
from keras_vtn.layers.leap import LeapAttention, leap_pairs
from keras_vtn.layers.linformer import LinformerAttention
from keras_vtn.layers.pooling import TokenPooling
from keras_vtn.layers.shift import TemporalShift
from keras_vtn.layers.sliding_window import SlidingWindowAttention
from keras_vtn.layers.transformer import DropPath, MLPBlock, TransformerBlock

__all__ = [
    "ClassToken",
    "DropPath",
    "FactorisedDotProductAttention",
    "FactorisedSelfAttentionBlock",
    "GroupedConv2D",
    "LeapAttention",
    "LinformerAttention",
    "MLPBlock",
    "MultiHeadSelfAttention",
    "PatchEmbedding",
    "PositionEmbedding",
    "SlidingWindowAttention",
    "TemporalShift",
    "TokenPooling",
    "TransformerBlock",
    "TubeletEmbedding",
    "leap_pairs",
    "scaled_dot_product_attention",
]

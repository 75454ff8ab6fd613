"""Embedding models: backbones by name, a projection head, L2 normalisation, save and load.

>>> import torch
>>> from tripletkit.models import create_model, list_models
>>> "small_cnn" in list_models()
True
>>> model = create_model("small_cnn")          # 1×28×28 images → 64-d unit vectors
>>> model.embed(torch.rand(10, 1, 28, 28)).shape
torch.Size([10, 64])

Registered models (``list_models()``):

=====================  ====================================================  ===============
name                   backbone                                              default D
=====================  ====================================================  ===============
``mlp``                MLP over feature vectors (needs ``in_features``)      64
``small_cnn``          3 conv blocks (32/64/128 ch.), any image size         64
``resnet18``           ResNet-18 from scratch (``stem="small"`` for ≤64 px)   128
``resnet34``           ResNet-34 from scratch                                128
``efficientnet_lite0`` EfficientNet-Lite0, bundled ImageNet weights [image]  128
``text_encoder``       transformer from a local dir (all-MiniLM-L6-v2) [text] 384 (no head)
``ensemble``           several models as one (``ensemble_models``)           sum of members'
=====================  ====================================================  ===============

``model.input_spec`` says what each expects; ``model.input_spec.prepare(images)`` converts raw
images (channels, scale, ImageNet normalisation for pretrained models).
"""

# Importing the backbone modules registers their models.
from tripletkit.models import cnn, efficientnet, ensemble, mlp, resnet, text
from tripletkit.models.averaging import average_models
from tripletkit.models.embedding import HEADS, EmbeddingModel, ProgressCallback, make_head
from tripletkit.models.ensemble import ensemble_models
from tripletkit.models.input_spec import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageInputSpec,
    InputSpec,
    TextInputSpec,
    VectorInputSpec,
)
from tripletkit.models.registry import (
    ModelEntry,
    create_model,
    create_model_from_config,
    get_model_entry,
    list_models,
    register_model,
    unregister_model,
)
from tripletkit.models.serialization import load_model, read_model_config, save_model

__all__ = [
    "HEADS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "EmbeddingModel",
    "ImageInputSpec",
    "InputSpec",
    "ModelEntry",
    "ProgressCallback",
    "TextInputSpec",
    "VectorInputSpec",
    "average_models",
    "cnn",
    "create_model",
    "create_model_from_config",
    "efficientnet",
    "ensemble",
    "ensemble_models",
    "get_model_entry",
    "list_models",
    "load_model",
    "make_head",
    "mlp",
    "read_model_config",
    "register_model",
    "resnet",
    "save_model",
    "text",
    "unregister_model",
]

"""Embedding models: pixels in [0, 1] in, embeddings out (normalisation inside the model)."""

from .embedder import IMAGENET_MEAN, IMAGENET_STD, Embedder
from .resnet import resnet18_embedder
from .serialization import build_model, load_model, save_model
from .small_cnn import SmallCNN, small_cnn_embedder
from .torchvision_compat import import_torchvision

__all__ = ["Embedder", "SmallCNN", "small_cnn_embedder", "resnet18_embedder", "import_torchvision", "build_model",
           "save_model", "load_model", "IMAGENET_MEAN", "IMAGENET_STD"]

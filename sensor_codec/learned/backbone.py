"""The segmentation backbone: a compact two-branch network in the Fast-SCNN family.

Layout (strides relative to the input)::

    image (N,3,H,W) in [0,1]
      -> normalise (inside the network, so every runtime feeds raw x/255)
      -> learning-to-downsample: conv3x3/2, dsconv/2, dsconv/2     -> "detail"  (1/8, 64 ch)
      -> global branch: inverted residuals /2, /2, then at 1/32,
         plus a global-average context term                        -> "context" (1/32, 128 ch)
      -> fusion: upsample context to 1/8, depthwise conv, add detail -> TAP     (1/8, 128 ch)
      -> classifier: 2 dsconv + 1x1 conv at 1/8, bilinear x8        -> logits   (N,11,H,W)

**Tap point.** The camera codec consumes ``tap``: the fused 1/8-resolution
feature map (``TAP_CHANNELS`` = 128 channels, spatial size ``ceil(H/8) x
ceil(W/8)``), i.e. exactly the tensor the classifier head reads. It is taken
after the fusion ReLU, so it is non-negative and already carries both local
detail and global context. The car computes it anyway for the semantic map,
which is why the codec's analysis transform costs only its own layers.

Pyramid pooling with adaptive bins (as in the original Fast-SCNN) is replaced
by a single global-average context term because adaptive pooling does not
export to ONNX with dynamic image sizes.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .backbone_meta import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES, TAP_CHANNELS, TAP_STRIDE

__all__ = ["CLASS_NAMES", "IGNORE_INDEX", "NUM_CLASSES", "TAP_CHANNELS", "TAP_STRIDE", "Backbone",
           "BackboneExport", "count_parameters"]

# ImageNet statistics; the network normalises its own input.
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


def _conv_bn_relu(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class DSConv(nn.Sequential):
    """Depthwise-separable convolution: depthwise 3x3 then pointwise 1x1."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__(_conv_bn_relu(cin, cin, 3, stride, groups=cin),
                         _conv_bn_relu(cin, cout, 1))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: expand 1x1, depthwise 3x3, project 1x1 (linear)."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int = 4) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_residual = stride == 1 and cin == cout
        self.block = nn.Sequential(
            _conv_bn_relu(cin, hidden, 1),
            _conv_bn_relu(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.use_residual else out


def _stage(cin: int, cout: int, blocks: int, stride: int) -> nn.Sequential:
    layers = [InvertedResidual(cin, cout, stride)]
    layers += [InvertedResidual(cout, cout, 1) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class Backbone(nn.Module):
    """Real-time semantic segmentation with a documented feature tap (see module doc).

    ``forward(x)`` returns ``(logits, tap)``: logits at input resolution and
    the 1/8 fused features. ``x`` is float RGB in [0, 1], shape (N, 3, H, W).
    """

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)
        self.downsample = nn.Sequential(_conv_bn_relu(3, 32, 3, 2), DSConv(32, 48, 2), DSConv(48, 64, 2))
        self.global_branch = nn.Sequential(_stage(64, 64, 3, 2), _stage(64, 96, 3, 2),
                                           _stage(96, 128, 3, 1))
        self.context_proj = _conv_bn_relu(128, 128, 1)
        self.fuse_low = nn.Sequential(
            nn.Conv2d(128, 128, 3, 1, 1, groups=128, bias=False), nn.BatchNorm2d(128),
            nn.ReLU(inplace=True), nn.Conv2d(128, TAP_CHANNELS, 1, bias=False),
            nn.BatchNorm2d(TAP_CHANNELS))
        self.fuse_high = nn.Sequential(nn.Conv2d(64, TAP_CHANNELS, 1, bias=False),
                                       nn.BatchNorm2d(TAP_CHANNELS))
        self.head = nn.Sequential(DSConv(TAP_CHANNELS, 128), DSConv(128, 128), nn.Dropout2d(0.1),
                                  nn.Conv2d(128, num_classes, 1))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The tap: fused 1/8-resolution features (N, TAP_CHANNELS, ceil(H/8), ceil(W/8))."""
        x = (x - self.mean) / self.std
        detail = self.downsample(x)
        context = self.global_branch(detail)
        # Global context replaces pyramid pooling (exports with dynamic shapes).
        context = context + self.context_proj(context.mean(dim=(2, 3), keepdim=True))
        context = F.interpolate(context, size=detail.shape[2:], mode="bilinear", align_corners=False)
        return F.relu(self.fuse_low(context) + self.fuse_high(detail))

    def classify(self, tap: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
        """Logits at ``size`` from tap features."""
        return F.interpolate(self.head(tap), size=size, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tap = self.features(x)
        return self.classify(tap, x.shape[2:]), tap


class BackboneExport(nn.Module):
    """The graph that ships as ONNX: image in, (semantic uint8 map, tap) out.

    The argmax happens in the graph so that runtimes move a one-byte map
    instead of 11 float planes per pixel.
    """

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, tap = self.backbone(image)
        return logits.argmax(dim=1).to(torch.uint8), tap


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

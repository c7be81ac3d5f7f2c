"""PyTorch graphs of a backbone release (the eager twin of its ONNX export)."""

from __future__ import annotations

import numpy as np
import torch

from .backbone import Backbone, BackboneExport
from .runtime import register_torch_graphs

BACKBONE_INPUTS = ["image"]
BACKBONE_OUTPUTS = ["semantic", "tap"]


def backbone_from_tensors(tensors: dict[str, np.ndarray]) -> Backbone:
    model = Backbone()
    state = {k: torch.from_numpy(np.array(v, dtype=np.float32 if v.dtype == np.float16 else v.dtype))
             for k, v in tensors.items()}
    model.load_state_dict(state, strict=True)
    return model.eval()


@register_torch_graphs("backbone")
def backbone_graphs(tensors: dict[str, np.ndarray]) -> dict[str, torch.nn.Module]:
    return {"backbone": BackboneExport(backbone_from_tensors(tensors)).eval()}

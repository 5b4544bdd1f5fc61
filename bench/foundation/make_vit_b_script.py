"""Writes a random-init ViT-B-sized TorchScript model and its layer groups.

Run with Debian's python3-torch and python3-torchvision (no download):
  /usr/bin/python3 bench/foundation/make_vit_b_script.py OUT.pt [GROUPS.yaml]

The model is torchvision's VisionTransformer at ViT-B/16's width and depth
(12 layers, width 768, 12 heads, MLP 3072) on 28x28 single-channel images
(patch 7, the channel repeated to RGB), 10 classes: 85.1M parameters, 340 MB
float32. GROUPS.yaml receives the `model.groups` block (14 groups: embed,
block0..block11, head) to paste under `model:`.
"""
import sys

import torch
from torch import nn
from torchvision.models.vision_transformer import VisionTransformer


class GrayVit(VisionTransformer):
    """VisionTransformer on [B, 1, H, W] images (channel repeated)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._process_input(x.expand(-1, 3, -1, -1))
        n = x.shape[0]
        batch_class_token = self.class_token.expand(n, -1, -1)
        x = torch.cat([batch_class_token, x], dim=1)
        x = self.encoder(x)
        return self.heads(x[:, 0])


def make(layers=12, width=768, heads=12, mlp=3072):
    torch.manual_seed(0)
    return GrayVit(image_size=28, patch_size=7, num_layers=layers,
                   num_heads=heads, hidden_dim=width, mlp_dim=mlp,
                   num_classes=10)


def group_of(name):
    """The group (as groups_yaml declares them) of a parameter name."""
    if name.startswith("encoder.layers.encoder_layer_"):
        return "block" + name.split(".")[2].rsplit("_", 1)[1]
    if name.startswith("encoder.ln.") or name.startswith("heads."):
        return "head"
    return "embed"


def groups_yaml(layers=12):
    lines = ["  groups:",
             '    - {name: embed, patterns: ["conv_proj.*", "class_token", '
             '"encoder.pos_embedding"]}']
    for i in range(layers):
        lines.append(f'    - {{name: block{i}, patterns: '
                     f'["encoder.layers.encoder_layer_{i}.*"]}}')
    lines.append('    - {name: head, patterns: ["encoder.ln.*", "heads.*"]}')
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    out = sys.argv[1]
    model = make()
    n = sum(p.numel() for p in model.parameters())
    torch.jit.save(torch.jit.script(model), out)
    if len(sys.argv) > 2:
        with open(sys.argv[2], "w") as f:
            f.write(groups_yaml())
    print(f"wrote {out}: {n} parameters, {4 * n} bytes float32")

"""Python twin of the built-in ViT in common/model/builtin_models.cc.

Same parameter names, registration order, groups and operations, so that the
benchmark compares the runtimes and not the models. Keep in sync with
VitImpl / BlockImpl / EncoderGroups there.
"""
import fnmatch
import math

import torch
from torch import nn
import torch.nn.functional as F


class Block(nn.Module):
    """Pre-norm Transformer block with explicit attention (BlockImpl)."""

    def __init__(self, dim, heads, mlp_dim):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, mlp_dim)
        self.fc2 = nn.Linear(mlp_dim, dim)

    def forward(self, x):
        b, t, d = x.size(0), x.size(1), x.size(2)
        hd = d // self.heads
        h = self.qkv(self.ln1(x)).reshape(b, t, 3, self.heads, hd).permute(
            2, 0, 3, 1, 4)
        q, k, v = h[0], h[1], h[2]
        att = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))
        att = torch.softmax(att, -1)
        out = torch.matmul(att, v).transpose(1, 2).reshape(b, t, d)
        y = x + self.proj(out)
        return y + self.fc2(F.gelu(self.fc1(self.ln2(y))))


class Vit(nn.Module):
    """VitImpl: patches via reshape/permute, cls token, blocks, norm, head."""

    def __init__(self, num_classes=10, dim=64, depth=4, heads=4, mlp_dim=128,
                 image_size=28, patch_size=7, channels=1):
        super().__init__()
        self.patch = patch_size
        tokens = (image_size // patch_size) ** 2
        self.patch_embed = nn.Linear(channels * patch_size * patch_size, dim)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.02)
        self.blocks = nn.ModuleList(
            [Block(dim, heads, mlp_dim) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, images):
        b, ch = images.size(0), images.size(1)
        p = self.patch
        gh, gw = images.size(2) // p, images.size(3) // p
        patches = (images.reshape(b, ch, gh, p, gw, p)
                   .permute(0, 2, 4, 1, 3, 5)
                   .reshape(b, gh * gw, ch * p * p))
        x = self.patch_embed(patches)
        x = torch.cat([self.cls_token.expand(b, 1, x.size(2)), x], 1)
        x = x + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x.select(1, 0)))


def groups(depth):
    """(name, patterns) in model order, as EncoderGroups declares them."""
    out = [("embed", ["patch_embed.*", "cls_token", "pos_embed"])]
    out += [(f"block{i}", [f"blocks.{i}.*"]) for i in range(depth)]
    out.append(("head", ["norm.*", "head.*"]))
    return out


def group_params(model, depth):
    """{group: [(name, parameter)]}; every parameter in exactly one group."""
    out = {name: [] for name, _ in groups(depth)}
    for pname, param in model.named_parameters():
        hits = [g for g, pats in groups(depth)
                if any(fnmatch.fnmatchcase(pname, pat) for pat in pats)]
        if len(hits) != 1:
            raise ValueError(f"{pname}: matched groups {hits}")
        out[hits[0]].append((pname, param))
    return out

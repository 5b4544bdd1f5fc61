"""PyTorch's peak RSS for the work one LayerFL client does in a round, on a
Hugging Face checkpoint (ViTModel or BertModel) with a classifier added.

Run with Debian's python3-torch (no transformers: the modules below follow
modeling_vit.py / modeling_bert.py with upstream's parameter names):
  /usr/bin/python3 bench/foundation/pytorch_hf.py --dir CHECKPOINT \
      --classes C --examples N --batch B --steps S --score_batches K \
      --score_from G --train layer.10,layer.11,head [--max_len T]

Loads the checkpoint, holds N examples as a careful PyTorch user would
(images as uint8, normalised per batch; token ids), runs the scoring pass (K
batches, gradients accumulated in .grad for the groups from index G upward
only, then per group the squared norm: importance.metric sq_grad_norm), then
trains the named groups (every other parameter requires_grad=False) for S
steps of SGD with momentum 0.9, keeping the trained groups' starting values
for the delta, as a federated client must. Prints key=value: peak_kb, the
larger of score_peak_kb and train_peak_kb (each phase's VmHWM after
resetting it, so the model's resident bytes are in both), and loaded_kb (the
VmHWM of loading, not counted: this script's safetensors reader copies the
file, which a real PyTorch user's memory-mapped reader does not).
"""
import argparse
import json
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "fixtures"))
import safetensors_py  # noqa: E402

sys.path.insert(0, HERE)
from proc_memory import reset_peak, status_kb  # noqa: E402


class Attention(nn.Module):
    def __init__(self, hidden, heads, p):
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(p)

    def forward(self, x, mask=None):
        b, t, h = x.shape
        split = lambda y: y.view(b, t, self.heads, h // self.heads).transpose(1, 2)
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        s = q @ k.transpose(-1, -2) / math.sqrt(h // self.heads)
        if mask is not None:
            s = s + mask
        return (self.dropout(s.softmax(-1)) @ v).transpose(1, 2).reshape(b, t, h)


class Dense(nn.Module):  # ViTSelfOutput / ViTIntermediate / ViTOutput
    def __init__(self, i, o):
        super().__init__()
        self.dense = nn.Linear(i, o)


class VitLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        h = c["hidden_size"]
        self.attention = nn.Module()
        self.attention.attention = Attention(h, c["num_attention_heads"], 0.0)
        self.attention.output = Dense(h, h)
        self.intermediate = Dense(h, c["intermediate_size"])
        self.output = Dense(c["intermediate_size"], h)
        self.layernorm_before = nn.LayerNorm(h, eps=c["layer_norm_eps"])
        self.layernorm_after = nn.LayerNorm(h, eps=c["layer_norm_eps"])

    def forward(self, x):
        x = self.attention.output.dense(self.attention.attention(self.layernorm_before(x))) + x
        return self.output.dense(F.gelu(self.intermediate.dense(self.layernorm_after(x)))) + x


class Vit(nn.Module):
    def __init__(self, c, classes):
        super().__init__()
        h, p = c["hidden_size"], c["patch_size"]
        self.vit = nn.Module()
        e = self.vit.embeddings = nn.Module()
        e.cls_token = nn.Parameter(torch.zeros(1, 1, h))
        e.position_embeddings = nn.Parameter(torch.zeros(1, (c["image_size"] // p) ** 2 + 1, h))
        e.patch_embeddings = nn.Module()
        e.patch_embeddings.projection = nn.Conv2d(c["num_channels"], h, p, p)
        self.vit.encoder = nn.Module()
        self.vit.encoder.layer = nn.ModuleList(VitLayer(c) for _ in range(c["num_hidden_layers"]))
        self.vit.layernorm = nn.LayerNorm(h, eps=c["layer_norm_eps"])
        self.classifier = nn.Linear(h, classes)

    def forward(self, pixels):
        e = self.vit.embeddings
        x = e.patch_embeddings.projection(pixels).flatten(2).transpose(1, 2)
        x = torch.cat([e.cls_token.expand(x.shape[0], -1, -1), x], 1) + e.position_embeddings
        for layer in self.vit.encoder.layer:
            x = layer(x)
        return self.classifier(self.vit.layernorm(x)[:, 0])

    def group(self, name):
        if name.startswith("vit.embeddings"):
            return "embeddings"
        if name.startswith("vit.encoder.layer."):
            return "layer." + name.split(".")[3]
        return "head"


class BertLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        h, i, eps, p = (c["hidden_size"], c["intermediate_size"], c["layer_norm_eps"],
                        c["hidden_dropout_prob"])
        self.attention = nn.Module()
        self.attention.self = Attention(h, c["num_attention_heads"], c["attention_probs_dropout_prob"])
        self.attention.output = Dense(h, h)
        self.attention.output.LayerNorm = nn.LayerNorm(h, eps=eps)
        self.intermediate = Dense(h, i)
        self.output = Dense(i, h)
        self.output.LayerNorm = nn.LayerNorm(h, eps=eps)
        self.dropout = nn.Dropout(p)

    def forward(self, x, mask):
        a = self.attention.output
        x = a.LayerNorm(self.dropout(a.dense(self.attention.self(x, mask))) + x)
        y = self.output.dense(F.gelu(self.intermediate.dense(x)))
        return self.output.LayerNorm(self.dropout(y) + x)


class Bert(nn.Module):
    def __init__(self, c, classes):
        super().__init__()
        h = c["hidden_size"]
        self.bert = nn.Module()
        e = self.bert.embeddings = nn.Module()
        e.word_embeddings = nn.Embedding(c["vocab_size"], h)
        e.position_embeddings = nn.Embedding(c["max_position_embeddings"], h)
        e.token_type_embeddings = nn.Embedding(c["type_vocab_size"], h)
        e.LayerNorm = nn.LayerNorm(h, eps=c["layer_norm_eps"])
        self.bert.encoder = nn.Module()
        self.bert.encoder.layer = nn.ModuleList(BertLayer(c) for _ in range(c["num_hidden_layers"]))
        self.bert.pooler = Dense(h, h)
        self.dropout = nn.Dropout(c["hidden_dropout_prob"])
        self.classifier = nn.Linear(h, classes)
        self.pad = c.get("pad_token_id", 0)

    def forward(self, ids):
        e = self.bert.embeddings
        positions = torch.arange(ids.shape[1]).unsqueeze(0)
        x = e.LayerNorm(e.word_embeddings(ids) + e.position_embeddings(positions) +
                        e.token_type_embeddings(torch.zeros_like(ids)))
        x = self.dropout(x)
        mask = (ids == self.pad).float()[:, None, None, :] * torch.finfo(torch.float32).min
        for layer in self.bert.encoder.layer:
            x = layer(x, mask)
        pooled = torch.tanh(self.bert.pooler.dense(x[:, 0]))
        return self.classifier(self.dropout(pooled))

    def group(self, name):
        if name.startswith("bert.embeddings"):
            return "embeddings"
        if name.startswith("bert.encoder.layer."):
            return "layer." + name.split(".")[3]
        return "head"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dir", required=True)
    p.add_argument("--classes", type=int, required=True)
    p.add_argument("--examples", type=int, required=True)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--score_batches", type=int, default=1)
    p.add_argument("--score_from", type=int, default=-1, help="-1: no scoring pass")
    p.add_argument("--train", default="")
    p.add_argument("--max_len", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    with open(os.path.join(a.dir, "config.json")) as f:
        c = json.load(f)
    vision = c["model_type"] == "vit"
    model = Vit(c, a.classes) if vision else Bert(c, a.classes)
    prefix = "vit." if vision else "bert."
    stored = safetensors_py.load_torch(os.path.join(a.dir, "model.safetensors"))
    state = {prefix + k: v for k, v in stored.items() if not k.startswith("pooler") or not vision}
    del stored
    missing, unexpected = model.load_state_dict(state, strict=False)
    del state
    assert all(m.startswith("classifier") for m in missing), missing
    model.train()
    params = dict(model.named_parameters())
    groups = []
    for n in params:
        g = model.group(n)
        if not groups or groups[-1] != g:
            groups.append(g)
    n = a.examples
    if vision:
        size = c["image_size"]
        data = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8)
        batch_of = lambda i: (data[i].float() / 255 - 0.5) / 0.5
    else:
        data = torch.randint(1000, c["vocab_size"], (n, a.max_len))
        batch_of = lambda i: data[i]
    labels = torch.randint(0, a.classes, (n,))
    base = status_kb()

    score_peak = 0
    if a.score_from >= 0:
        reset_peak()
        scored = set(groups[a.score_from:])
        for name, t in params.items():
            t.requires_grad_(model.group(name) in scored)
        for k in range(a.score_batches):
            i = torch.arange(k * a.batch, (k + 1) * a.batch) % n
            F.cross_entropy(model(batch_of(i)), labels[i]).backward()
        sq = {}
        for name, t in params.items():
            if t.grad is not None:
                g = model.group(name)
                sq[g] = sq.get(g, 0.0) + float((t.grad / a.score_batches).pow(2).sum())
                t.grad = None
        score_peak = status_kb()

    reset_peak()
    trained = set(a.train.split(",")) if a.train else set()
    train_params = []
    start = {}
    for name, t in params.items():
        on = model.group(name) in trained
        t.requires_grad_(on)
        if on:
            train_params.append(t)
            start[name] = t.detach().clone()
    if train_params:
        opt = torch.optim.SGD(train_params, lr=0.01, momentum=0.9)
        for s in range(a.steps):
            i = torch.arange(s * a.batch, (s + 1) * a.batch) % n
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(batch_of(i)), labels[i]).backward()
            opt.step()
        del opt
        delta = {name: params[name].detach() - v for name, v in start.items()}
        del delta
    train_peak = status_kb()
    print("peak_kb=%d score_peak_kb=%d train_peak_kb=%d loaded_kb=%d groups=%d" %
          (max(score_peak, train_peak), score_peak, train_peak, base, len(groups)))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Random-init Hugging Face checkpoints of foundation-model size, in the exact
upstream layout, and synthetic data for them: what bench/foundation runs on
(no model hub is reachable; the weights are NOT pretrained, only their shapes,
names and files are real).

  make_checkpoints.py OUT [--only vit-b,bert-base,bert-large]
    OUT/vit-b/       ViTModel, ViT-B/16 at 224 (86.4M parameters with the pooler the
                     classifier does not use; LayerFL adds ViTForImageClassification's head),
                     config.json, model.safetensors, preprocessor_config.json
    OUT/bert-base/   BertModel, bert-base-uncased's shapes (109.5M), vocab.txt
                     of 30,522 entries
    OUT/bert-large/  BertModel, bert-large's shapes (335M): the ~350M-parameter
                     encoder of the coordinator's memory bound
    OUT/images/{train,test}/<class>/*.png   synthetic photos of 4 classes
    OUT/text/{train,test}.jsonl   synthetic reviews of 3 classes

Weights: normal(0, 0.02), layer norms 1/0, as transformers initialises.
"""
import argparse
import json
import os
import random
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "fixtures"))
import make_hf_run  # noqa: E402  (the PNG writer)
import safetensors_py  # noqa: E402


class Init:
    def __init__(self, seed):
        self.gen = torch.Generator().manual_seed(seed)
        self.w = {}

    def normal(self, name, *shape):
        self.w[name] = torch.randn(*shape, generator=self.gen) * 0.02

    def linear(self, name, out, inp, bias=True):
        self.normal(name + ".weight", out, inp)
        if bias:
            self.w[name + ".bias"] = torch.zeros(out)

    def ln(self, name, width):
        self.w[name + ".weight"] = torch.ones(width)
        self.w[name + ".bias"] = torch.zeros(width)


def vit_b(d):
    hidden, layers, heads, inter, image, patch = 768, 12, 12, 3072, 224, 16
    i = Init(1)
    i.normal("embeddings.cls_token", 1, 1, hidden)
    i.normal("embeddings.position_embeddings", 1, (image // patch) ** 2 + 1, hidden)
    i.normal("embeddings.patch_embeddings.projection.weight", hidden, 3, patch, patch)
    i.w["embeddings.patch_embeddings.projection.bias"] = torch.zeros(hidden)
    for n in range(layers):
        p = "encoder.layer.%d." % n
        for m in ("query", "key", "value"):
            i.linear(p + "attention.attention." + m, hidden, hidden)
        i.linear(p + "attention.output.dense", hidden, hidden)
        i.linear(p + "intermediate.dense", inter, hidden)
        i.linear(p + "output.dense", hidden, inter)
        i.ln(p + "layernorm_before", hidden)
        i.ln(p + "layernorm_after", hidden)
    i.ln("layernorm", hidden)
    i.linear("pooler.dense", hidden, hidden)
    config = {"architectures": ["ViTModel"], "attention_probs_dropout_prob": 0.0,
              "encoder_stride": patch, "hidden_act": "gelu", "hidden_dropout_prob": 0.0,
              "hidden_size": hidden, "image_size": image, "initializer_range": 0.02,
              "intermediate_size": inter, "layer_norm_eps": 1e-12, "model_type": "vit",
              "num_attention_heads": heads, "num_channels": 3, "num_hidden_layers": layers,
              "patch_size": patch, "qkv_bias": True, "torch_dtype": "float32",
              "transformers_version": "4.46.3"}
    preprocessor = {"do_normalize": True, "do_rescale": True, "do_resize": True,
                    "image_mean": [0.5, 0.5, 0.5], "image_processor_type": "ViTImageProcessor",
                    "image_std": [0.5, 0.5, 0.5], "resample": 2,
                    "rescale_factor": 0.00392156862745098,
                    "size": {"height": image, "width": image}}
    save(d, config, i.w, {"preprocessor_config.json": preprocessor})


def bert(d, hidden, layers, heads, inter):
    vocab_size, positions = 30522, 512
    i = Init(2)
    i.normal("embeddings.word_embeddings.weight", vocab_size, hidden)
    i.normal("embeddings.position_embeddings.weight", positions, hidden)
    i.normal("embeddings.token_type_embeddings.weight", 2, hidden)
    i.ln("embeddings.LayerNorm", hidden)
    for n in range(layers):
        p = "encoder.layer.%d." % n
        for m in ("query", "key", "value"):
            i.linear(p + "attention.self." + m, hidden, hidden)
        i.linear(p + "attention.output.dense", hidden, hidden)
        i.ln(p + "attention.output.LayerNorm", hidden)
        i.linear(p + "intermediate.dense", inter, hidden)
        i.linear(p + "output.dense", hidden, inter)
        i.ln(p + "output.LayerNorm", hidden)
    i.linear("pooler.dense", hidden, hidden)
    config = {"architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1,
              "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "hidden_size": hidden,
              "initializer_range": 0.02, "intermediate_size": inter, "layer_norm_eps": 1e-12,
              "max_position_embeddings": positions, "model_type": "bert",
              "num_attention_heads": heads, "num_hidden_layers": layers, "pad_token_id": 0,
              "type_vocab_size": 2, "vocab_size": vocab_size, "torch_dtype": "float32"}
    save(d, config, i.w, {"tokenizer_config.json": {"do_lower_case": True,
                                                    "model_max_length": positions}})
    # bert-base-uncased's layout: [PAD], [unused*], [UNK] [CLS] [SEP] [MASK], then pieces.
    words = make_hf_run.WORDS + ["movie", "acting", "scene", "director", "worst", "best"]
    vocab = (["[PAD]"] + ["[unused%d]" % n for n in range(99)] +
             ["[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words)
    vocab += ["tok%d" % n for n in range(vocab_size - len(vocab))]
    with open(os.path.join(d, "vocab.txt"), "w") as f:
        f.write("\n".join(vocab) + "\n")


def save(d, config, weights, extra_json):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    for name, value in extra_json.items():
        with open(os.path.join(d, name), "w") as f:
            json.dump(value, f, indent=2)
    safetensors_py.save(os.path.join(d, "model.safetensors"),
                        {k: v.float().contiguous() for k, v in weights.items()},
                        metadata={"format": "pt"})
    print("%s: %.1fM parameters" % (d, sum(v.numel() for v in weights.values()) / 1e6))


def data(out):
    rng = random.Random(5)
    colours = {"red": (200, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 200),
               "grey": (128, 128, 128)}
    for split, per_class in (("train", 24), ("test", 8)):
        for name, (r, g, b) in colours.items():
            d = os.path.join(out, "images", split, name)
            os.makedirs(d, exist_ok=True)
            for n in range(per_class):
                w, h = rng.randint(48, 96), rng.randint(48, 96)
                noise = [rng.randint(-50, 50) for _ in range(w * h)]
                make_hf_run.png(os.path.join(d, "%s_%03d.png" % (name, n)), w, h, 3,
                                lambda x, y, w=w, noise=noise: [max(0, min(255, v + noise[y * w + x]))
                                                                for v in (r, g, b)])
    make_hf_run.write_text(out, rng)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--only", default="vit-b,bert-base,bert-large")
    a = p.parse_args()
    only = set(a.only.split(","))
    if "vit-b" in only and not os.path.exists(os.path.join(a.out, "vit-b", "model.safetensors")):
        vit_b(os.path.join(a.out, "vit-b"))
    if "bert-base" in only and not os.path.exists(os.path.join(a.out, "bert-base", "model.safetensors")):
        bert(os.path.join(a.out, "bert-base"), 768, 12, 12, 3072)
    if "bert-large" in only and not os.path.exists(os.path.join(a.out, "bert-large", "model.safetensors")):
        bert(os.path.join(a.out, "bert-large"), 1024, 24, 16, 4096)
    if not os.path.exists(os.path.join(a.out, "text", "test.jsonl")):
        data(a.out)


if __name__ == "__main__":
    main()

"""PyTorch's peak RSS for the work one LayerFL client does in a round.

Run with Debian's python3-torch:
  /usr/bin/python3 bench/foundation/pytorch_peak.py --model M.pt \
      --examples N --batch B --steps S --score_batches K --score_from G \
      --train block10,block11,head [--threads T]

Loads the TorchScript model, holds N float32 28x28 examples (what the
client holds), runs the scoring pass (K batches; gradients accumulated in
.grad for the groups from index G upward only, then per group the squared
norm of their mean: importance.metric sq_grad_norm), then trains the named
groups (every other parameter requires_grad=False) for S steps of SGD with
momentum 0.9, and keeps the trained groups' starting values to compute the
delta, as a federated client must. Prints one line of key=value:
peak_kb (VmHWM of the process), score_peak_kb and train_peak_kb (VmHWM of
each phase, after resetting it with /proc/self/clear_refs).
"""
import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_vit_b_script import group_of  # noqa: E402
from proc_memory import reset_peak, status_kb  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--examples", type=int, required=True)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--score_batches", type=int, default=2)
    p.add_argument("--score_from", type=int, default=-1,
                   help="-1: no scoring pass")
    p.add_argument("--train", default="")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = torch.jit.load(a.model)
    model.train()
    params = dict(model.named_parameters())
    names = []  # group names in model order
    for n in params:
        g = group_of(n)
        if g not in names:
            names.append(g)
    images = torch.rand(a.examples, 1, 28, 28)
    labels = torch.randint(0, 10, (a.examples,))
    gen = torch.Generator().manual_seed(1)

    def batch():
        idx = torch.randint(0, a.examples, (a.batch,), generator=gen)
        return images.index_select(0, idx), labels.index_select(0, idx)

    out = {"load_kb": status_kb()}
    total = 0
    if a.score_from >= 0:
        reset_peak()
        scored = set(names[a.score_from:])
        for n, t in params.items():
            t.requires_grad_(group_of(n) in scored)
        for _ in range(a.score_batches):
            x, y = batch()
            F.cross_entropy(model(x), y).backward()
        scores = {g: 0.0 for g in names}
        with torch.no_grad():
            for n, t in params.items():
                if t.grad is not None:
                    scores[group_of(n)] += float(
                        (t.grad.double() / a.score_batches).pow(2).sum())
                    t.grad = None
        total += sum(scores.values())
        out["score_peak_kb"] = status_kb()
    if a.train:
        reset_peak()
        chosen = set(a.train.split(","))
        trainable = []
        for n, t in params.items():
            t.requires_grad_(group_of(n) in chosen)
            if group_of(n) in chosen:
                trainable.append(t)
        start = [t.detach().clone() for t in trainable]
        opt = torch.optim.SGD(trainable, lr=0.01, momentum=0.9)
        for _ in range(a.steps):
            x, y = batch()
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            deltas = [t.detach() - s for t, s in zip(trainable, start)]
        total += sum(float(d.abs().sum()) for d in deltas)
        out["train_peak_kb"] = status_kb()
    out["peak_kb"] = max(out.values())
    out["checksum"] = f"{total:.3e}"
    print(" ".join(f"{k}={v}" for k, v in out.items()))


if __name__ == "__main__":
    main()

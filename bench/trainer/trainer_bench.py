"""Python twin of trainer_bench.cc: ms per selective training step of the ViT.

Each timed call mirrors SelectiveTrainer::Train (common/trainer/trainer.cc):
freeze every parameter, enable the chosen groups, snapshot them, new SGD
(momentum) optimizer, `steps` steps of index_select batch -> forward ->
cross-entropy -> loss.item() -> zero_grad -> backward -> step, deltas, restore
requires_grad. Run with /usr/bin/python3 (Debian's python3-torch).
Output format: see trainer_bench.cc.
"""
import argparse
import math
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import vit  # noqa: E402

DEPTH = 4


def train(model, gparams, chosen, inputs, labels, batch, steps, seed,
          lr=0.05, momentum=0.9):
    for plist in gparams.values():
        for _, p in plist:
            p.requires_grad_(False)
    trainable, global_copy = [], []
    for g in chosen:
        for _, p in gparams[g]:
            p.requires_grad_(True)
            trainable.append(p)
            global_copy.append(p.detach().clone())
    opt = torch.optim.SGD(trainable, lr=lr, momentum=momentum)
    gen = torch.Generator().manual_seed(seed)
    n = labels.size(0)
    order, pos = None, n
    model.train(True)
    for step in range(steps):
        if pos + batch > n:
            order, pos = torch.randperm(n, generator=gen), 0
        idx = order[pos:pos + batch].clone()
        pos += batch
        logits = model(inputs.index_select(0, idx))
        loss = F.cross_entropy(logits, labels.index_select(0, idx))
        value = loss.item()
        if not math.isfinite(value):
            raise RuntimeError(f"loss became {value} at step {step}")
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        deltas = [p.detach() - g for p, g in zip(trainable, global_copy)]
    for plist in gparams.values():
        for _, p in plist:
            p.grad = None
            p.requires_grad_(True)
    return deltas


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["full", "last"], default="full")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup_steps", type=int, default=10)
    ap.add_argument("--examples", type=int, default=1024)
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    model = vit.Vit(depth=DEPTH)
    gparams = vit.group_params(model, DEPTH)
    for name, plist in gparams.items():
        print(f"group {name} {sum(p.numel() for _, p in plist)}")
    chosen = list(gparams) if a.mode == "full" else [f"block{DEPTH - 1}"]

    torch.manual_seed(1)
    inputs = torch.randn(a.examples, 1, 28, 28)
    labels = torch.randint(10, (a.examples,), dtype=torch.long)

    # Same seed, same draws as the C++ model: equal init_loss = same model.
    with torch.no_grad():
        n = min(a.batch, a.examples)
        init_loss = F.cross_entropy(model(inputs[:n]), labels[:n]).item()

    def timed(steps, seed):
        start = time.perf_counter()
        train(model, gparams, chosen, inputs, labels, a.batch, steps, seed)
        return (time.perf_counter() - start) * 1e3

    first_ms = timed(1, 0)
    if a.warmup_steps > 0:
        timed(a.warmup_steps, 1)
    per_step = [timed(a.steps, 2 + r) / a.steps for r in range(a.reps)]
    trained = sum(p.numel() for g in chosen for _, p in gparams[g])
    print(f"result lang=python mode={a.mode} batch={a.batch} "
          f"threads={a.threads} steps={a.steps} reps={a.reps} "
          f"first_ms={first_ms:.3f} median_ms={statistics.median(per_step):.4f} "
          f"min_ms={min(per_step):.4f} trained_params={trained} "
          f"init_loss={init_loss:.6f}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Accuracy against the clients' compute as the profile prices it.

    plot_predicted_cost.py RUNS_DIR BUDGET OUT.png [TITLE]

RUNS_DIR is an experiment output's runs/<partition> directory, BUDGET one of
its time-budget settings. For every strategy: the last-5 accuracy and the
clients' compute over the run as the profile prices it (the sum of every
client-round's "cost" in metrics.jsonl: its selection, with its scoring pass
when it scored and trained something; a client that only scored counts 0),
in seconds on its device; accuracy as mean +- std over seeds. Unlike the
measured client seconds, the priced ones do not grow when the machine that
runs the grid is loaded. Prints the table it plots.
"""
import glob
import json
import os
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def cell(path):
    accs, cost = [], 0.0
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            if "accuracy" in r:
                accs.append(r["accuracy"])
            for c in r.get("clients", []):
                cost += max(0.0, c.get("cost", 0.0))
    last = accs[-5:]
    return 100.0 * sum(last) / len(last), cost


def main():
    runs, budget, out = sys.argv[1], sys.argv[2], sys.argv[3]
    title = sys.argv[4] if len(sys.argv) > 4 else budget
    rows = []
    for d in sorted(glob.glob(os.path.join(runs, budget, "*"))):
        cells = [cell(p) for p in sorted(glob.glob(os.path.join(d, "seed*", "metrics.jsonl")))]
        if not cells:
            continue
        acc = [a for a, _ in cells]
        cost = [c for _, c in cells]
        sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
        rows.append((os.path.basename(d), statistics.mean(acc), sd, statistics.mean(cost)))
    print("%-18s %8s %6s %14s" % ("strategy", "last 5", "std", "priced s"))
    for name, acc, sd, cost in rows:
        print("%-18s %8.2f %6.2f %14.1f" % (name, acc, sd, cost))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, acc, sd, cost in rows:
        if name == "full":
            continue  # no budget: off the scale of the others
        score_based = name in ("rgn", "snr", "importance", "strategic") or "-" in name
        ax.errorbar([cost], [acc], yerr=[sd], marker="s" if "-" in name else "o",
                    capsize=3, color="C3" if "-" in name else ("C0" if score_based else "C7"))
        ax.annotate(name, (cost, acc), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel("clients' compute as priced by the profile, over the run (s; training,\n"
                  "with the scoring pass of the clients that trained)")
    ax.set_ylabel("test accuracy, mean of the last 5 rounds (%)")
    ax.set_title(title + ": accuracy vs priced client compute")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main()

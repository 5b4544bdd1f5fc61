#!/usr/bin/python3
"""Plots of an experiment grid, from the summary.json layerfl-experiments writes.

usage: plot.py SUMMARY_JSON OUT_DIR

Writes, per partition x budget setting:
  acc_<partition>_<budget>.png                  accuracy vs round, one line per
                                                strategy (mean over seeds)
  cost_<partition>_<budget>.png                 last-5 accuracy vs the clients'
                                                measured compute seconds, one
                                                point per strategy (mean and
                                                std over seeds)
  heatmap_<partition>_<budget>_<strategy>.png   layer x round: share of the
                                                round's clients that selected
                                                each layer (first seed)
Needs python3-matplotlib (Debian: apt-get install -y python3-matplotlib).
"""

import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_accuracy(setting, path):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row in setting["strategies"]:
        curve = row["curve"]
        if not curve["rounds"]:
            continue
        acc = [100.0 * a if a is not None else float("nan") for a in curve["accuracy"]]
        label = row["strategy"]
        if row["seeds_done"] > 1:
            label += " (%d seeds)" % row["seeds_done"]
        ax.plot(curve["rounds"], acc, marker="o", markersize=3, label=label,
                linewidth=2.2 if row["strategy"] == "strategic" else 1.3)
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("%s / %s" % (setting["partition"], setting["budget"]))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_cost(setting, path):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row in setting["strategies"]:
        acc = row.get("last5_accuracy")
        if not row["seeds_done"] or acc is None or not row.get("client_seconds"):
            continue
        ax.errorbar([row["client_seconds"]], [100.0 * acc["mean"]],
                    yerr=[100.0 * acc["std"]], marker="o", capsize=3,
                    markersize=7 if row["strategy"].startswith("strategic") else 5)
        ax.annotate(row["strategy"], (row["client_seconds"], 100.0 * acc["mean"]),
                    textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel("clients' measured compute over the run (s, scoring + training)")
    ax.set_ylabel("test accuracy, mean of the last 5 rounds (%)")
    ax.set_title("%s / %s: accuracy vs cost" % (setting["partition"], setting["budget"]))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_heatmap(setting, row, layers, path):
    heat = row["heatmap"]
    rounds = heat["rounds"]
    # fraction[round][layer] -> image rows = layers (input at the bottom).
    grid = [[heat["fraction"][r][l] for r in range(len(rounds))]
            for l in range(len(layers))]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.35 * len(rounds) + 2.5),
                                    max(2.5, 0.4 * len(layers) + 1.2)))
    image = ax.imshow(grid, aspect="auto", origin="lower", cmap="viridis",
                      vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_yticks(range(len(layers)))
    ax.set_yticklabels(layers)
    step = max(1, len(rounds) // 15)
    ax.set_xticks(range(0, len(rounds), step))
    ax.set_xticklabels([str(r) for r in rounds[::step]])
    ax.set_xlabel("round")
    ax.set_title("%s: %s / %s, seed %d" % (row["strategy"], setting["partition"],
                                           setting["budget"], heat["seed"]),
                 fontsize=9)
    bar = fig.colorbar(image, ax=ax)
    bar.set_label("share of the round's clients", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv):
    if len(argv) != 3:
        sys.stderr.write(__doc__)
        return 2
    with open(argv[1]) as f:
        summary = json.load(f)
    out = argv[2]
    written = 0
    for setting in summary["settings"]:
        tag = "%s_%s" % (setting["partition"], setting["budget"])
        if not any(row["seeds_done"] for row in setting["strategies"]):
            continue
        plot_accuracy(setting, os.path.join(out, "acc_%s.png" % tag))
        plot_cost(setting, os.path.join(out, "cost_%s.png" % tag))
        written += 2
        for row in setting["strategies"]:
            if not row["seeds_done"] or not row["heatmap"]["rounds"]:
                continue
            plot_heatmap(setting, row, summary["layers"],
                         os.path.join(out, "heatmap_%s_%s.png" % (tag, row["strategy"])))
            written += 1
    print("plots: %d PNG files in %s" % (written, out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""Summarises bench/async/run.sh's runs: per mode and strategy, mean +- std
over seeds of the simulated seconds to first reach each target accuracy, the
accuracy at fixed simulated times, the final and last-5 accuracy (at the same
200 updates), the simulated seconds the 200 updates took, and the share of
the updates that came from the quarter of the clients that sent the most
(25% when every client takes part equally)."""
import glob, json, math, os, statistics, sys

out, build = sys.argv[1], sys.argv[2]
TARGETS = [0.65, 0.70, 0.75]
TIMES = [30, 60, 120, 240]
CLIENTS = 20  # configs/demo.yaml's data.num_clients


def ms(v):
    """mean ± std of the runs that got there, and how many did when not all."""
    got = [x for x in v if x is not None]
    if not got:
        return f"never (0/{len(v)})"
    s = statistics.stdev(got) if len(got) > 1 else 0.0
    out = f"{statistics.mean(got):6.1f} ± {s:4.1f}"
    return out if len(got) == len(v) else f"{out} ({len(got)}/{len(v)})"


def pct(v):
    s = statistics.stdev(v) if len(v) > 1 else 0.0
    return f"{100 * statistics.mean(v):5.2f} ± {100 * s:4.2f}"


runs = {}
for path in sorted(glob.glob(os.path.join(out, "*", "metrics.jsonl"))):
    name = os.path.basename(os.path.dirname(path))
    mode, strategy, seed = name.rsplit("-", 2)[0], name.rsplit("-", 2)[1], name.rsplit("-", 2)[2]
    rows = [json.loads(l) for l in open(path)]
    runs.setdefault((mode, strategy), []).append(rows)

print(f"# bash bench/async/run.sh {build}   (simulated clock: devices.train_s 1 s,"
      " score_s 0.5 s, speeds 0.1-1.0; 200 client updates per run; 3 seeds)")
print()
hdr = "mode         strategy    " + "".join(f"t(acc>={t:.2f}) s        " for t in TARGETS)
print(hdr + " updates took s    final %        last-5 %       busiest-quarter share %")
order = ["sync", "async-poly", "async-const", "async-cohort"]
summary = {}
for strategy in ["strategic", "top"]:
    for mode in order:
        rs = runs.get((mode, strategy), [])
        if not rs:
            continue
        reach = {t: [] for t in TARGETS}
        at = {T: [] for T in TIMES}
        final, last5, took, busiest = [], [], [], []
        for rows in rs:
            for t in TARGETS:
                hit = next((r["timing_ms"]["sim_clock"] / 1000 for r in rows
                            if r.get("accuracy", 0) >= t), None)
                reach[t].append(hit)
            for T in TIMES:
                seen = [r["accuracy"] for r in rows
                        if r["timing_ms"]["sim_clock"] / 1000 <= T and "accuracy" in r]
                at[T].append(seen[-1] if seen else None)
            final.append(rows[-1]["accuracy"])
            last5.append(statistics.mean(r["accuracy"] for r in rows[-5:]))
            took.append(rows[-1]["timing_ms"]["sim_clock"] / 1000)
            counts = {}
            for r in rows:
                for c in r["clients"]:
                    if c.get("contributed"):
                        counts[c["id"]] = counts.get(c["id"], 0) + 1
            top = sorted(counts.values(), reverse=True)[: CLIENTS // 4]
            busiest.append(sum(top) / sum(counts.values()))
        print(f"{mode:12} {strategy:11} " + "".join(f"{ms(reach[t]):22} " for t in TARGETS)
              + f"{ms(took):17} {pct(final):14} {pct(last5):14} {pct(busiest)}")
        for T in TIMES:
            vals = [v for v in at[T] if v is not None]
            summary.setdefault(("at", strategy, T), {})[mode] = (pct(vals) if vals else "-", len(vals))
print()
print("accuracy % at a simulated time (the last evaluation committed by then)")
print("strategy    mode         " + "".join(f"t = {T:3d} s        " for T in TIMES))
for strategy in ["strategic", "top"]:
    for mode in order:
        if not runs.get((mode, strategy)):
            continue
        line = f"{strategy:11} {mode:12} "
        for T in TIMES:
            cell = summary.get(("at", strategy, T), {}).get(mode)
            line += f"{cell[0] if cell else '-':18} "
        print(line)

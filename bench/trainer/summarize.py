"""Summarises the result lines of trainer_bench (C++) and trainer_bench.py
(Python) read from a file written by run.sh: checks that both languages built
the same model, then prints per mode and batch the medians over rounds and the
ratios. Exits 1 if the models differ."""
import collections
import statistics
import sys


def parse(path):
    groups = collections.defaultdict(dict)  # lang -> {group: params}
    results = collections.defaultdict(list)  # (lang, mode, batch) -> [dict]
    pending = {}
    for line in open(path):
        f = line.split()
        if f and f[0] == "group":
            pending[f[1]] = int(f[2])
        elif f and f[0] == "result":
            kv = dict(x.split("=", 1) for x in f[1:])
            groups[kv["lang"]].update(pending)
            pending = {}
            results[(kv["lang"], kv["mode"], int(kv["batch"]))].append(kv)
    return groups, results


def main():
    groups, results = parse(sys.argv[1])
    cpp, py = groups["cpp"], groups["python"]
    print("parameters per layer group (C++ / Python):")
    for name in cpp:
        mark = "" if cpp[name] == py.get(name) else "   <-- MISMATCH"
        print(f"  {name:7s} {cpp[name]:7d} / {py.get(name, 0):7d}{mark}")
    same_groups = cpp == py
    init = collections.defaultdict(set)  # (mode, batch) -> init losses
    for (_, mode, batch), rs in results.items():
        init[(mode, batch)].update(r["init_loss"] for r in rs)
    same_loss = all(len(s) == 1 for s in init.values())
    print(f"same groups and sizes: {'yes' if same_groups else 'NO'}; same "
          f"initial loss on the first batch (=> same weights, data and ops): "
          f"{'yes' if same_loss else 'NO'}")
    print()

    def vals(lang, mode, batch, key="median_ms"):
        return [float(r[key]) for r in results[(lang, mode, batch)]]

    def med(lang, mode, batch, key="median_ms"):
        return statistics.median(vals(lang, mode, batch, key))

    threads = next(iter(results.values()))[0]["threads"]
    batches = sorted({k[2] for k in results})
    print("ms/step: median over rounds of each process's median; py/cpp: ratio "
          "of those;\npaired: median over rounds of the per-round ratio; "
          "best: ratio of the fastest timed call of each language")
    hdr = (f"{'mode':5s} {'batch':>5s} {'thr':>3s} {'C++ ms/step':>11s} "
           f"{'Py ms/step':>10s} {'py/cpp':>6s} {'paired':>6s} {'best':>5s} "
           f"{'trained':>8s} {'1st call C++/Py ms':>19s}")
    print(hdr)
    print("-" * len(hdr))
    for b in batches:
        for m in ("full", "last"):
            c, p = med("cpp", m, b), med("python", m, b)
            paired = statistics.median(
                y / x for x, y in zip(vals("cpp", m, b), vals("python", m, b)))
            best = min(vals("python", m, b, "min_ms")) / min(vals("cpp", m, b, "min_ms"))
            trained = results[("cpp", m, b)][0]["trained_params"]
            first = (f"{med('cpp', m, b, 'first_ms'):.0f} / "
                     f"{med('python', m, b, 'first_ms'):.0f}")
            print(f"{m:5s} {b:5d} {threads:>3s} {c:11.2f} {p:10.2f} {p / c:6.2f} "
                  f"{paired:6.2f} {best:5.2f} {trained:>8s} {first:>19s}")
    print()
    print("selective training saving, full / last-block step time "
          "(ratio of medians; paired: median of per-round ratios):")
    for b in batches:
        line = f"  batch {b:3d}:"
        for lang, label in (("cpp", "C++"), ("python", "Python")):
            full, last = vals(lang, "full", b), vals(lang, "last", b)
            paired = statistics.median(f / l for f, l in zip(full, last))
            line += (f"  {label} {statistics.median(full) / statistics.median(last):.2f}x"
                     f" (paired {paired:.2f}x)")
        print(line)
    worst = max(float(r["first_ms"]) for rs in results.values() for r in rs
                if r["lang"] == "cpp")
    worst_py = max(float(r["first_ms"]) for rs in results.values() for r in rs
                   if r["lang"] == "python")
    print(f"slowest first call: C++ {worst:.0f} ms, Python {worst_py:.0f} ms")
    for lang in ("cpp", "python"):
        hit = total = 0
        for m in ("full", "last"):
            for b in batches:
                v = vals(lang, m, b)
                best_cell = min(min(v), min(vals("cpp" if lang == "python" else "python", m, b)))
                hit += sum(x > 3 * best_cell for x in v)
                total += len(v)
        print(f"{lang} processes over 3x slower than their cell's best: {hit}/{total}")
    if not (same_groups and same_loss):
        sys.exit(1)


if __name__ == "__main__":
    main()

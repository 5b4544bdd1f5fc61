"""Foundation-model sized runs of LayerFL on Hugging Face checkpoints, measured
beside PyTorch in the same invocation (bench/foundation/README.md).

  /usr/bin/python3 bench/foundation/run.py BUILD_DIR [--work DIR] [--out FILE]
      [--models vit-b,bert-base] [--large bert-large] [--clients 4]

For each of --models: random-init checkpoints of that size in Hugging Face
layout and synthetic data (make_checkpoints.py, cached in --work), the
clients' shares (layerfl-partition), then layerfl-coordinator + N
layerfl-client daemons on loopback for 2 rounds with budgets in memory. Client
0 is killed (the fault ends its process as kill -9 would) once 5 layers of its
first download are in its --download_cache_dir, and started again: it must
finish the download with fewer bytes than a whole one. Every process's peak
RSS is sampled (VmHWM) until it exits; PyTorch (pytorch_hf.py: the same model,
examples, batch, scoring and training of the most groups a client trained)
runs after, in the same invocation. Raw TCP on loopback carries the model's
bytes once for the throughput ratio. For --large (the ~350M-parameter
encoder) only the coordinator's peak is the point: 2 clients train the head.
Prints one table per model and writes it to --out.
"""
import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time

from proc_memory import status_kb

HERE = os.path.dirname(os.path.abspath(__file__))
PY = "/usr/bin/python3"

CONFIG = """seed: 1
threads: 1
model:
  kind: hf
  hf_dir: {hf_dir}
  num_classes: {classes}
  max_len: 64
data:
{data}  partition: iid
  num_clients: {clients}
  max_test_examples: 32
train:
  optimizer: sgd
  lr: 0.01
  momentum: 0.9
  batch_size: 8
  local_steps: 2
importance:
  metric: sq_grad_norm
  batches: 1
federated:
  rounds: {rounds}
  clients_per_round: {clients}
  min_clients: {clients}
  selection_period: 1
  eval_every: 1
  eval_batch_size: 8
  round_deadline_s: 1200
  run_dir: {work}/run
  keep_checkpoints: 1
  resume: false
selection:
  strategy: strategic
  lambda: 0.2
budget:
{budget}profile:
  cache_dir: {work}/profile_cache
  steps: 1
  reps: 1
transport:
  wait_for_clients: {clients}
  wait_for_clients_s: 900
  client_timeout_s: 900
  max_poll_s: 10
  max_held_mb: 0         # an update waiting for its turn waits on disk
"""

MEMORY_BUDGET = "  unit: memory\n  distribution: fixed\n  value: {mb}\n"

MODELS = {
    # name: (classes, data section, budget MiB)
    "vit-b": (4, "  dataset: image_folder\n  train_path: {hf}/images/train\n"
                 "  test_path: {hf}/images/test\n", 1100),
    "bert-base": (3, "  dataset: jsonl\n  train_path: {hf}/text/train.jsonl\n"
                     "  test_path: {hf}/text/test.jsonl\n  labels: [neg, neutral, pos]\n",
                  1100),
    "bert-large": (3, "  dataset: jsonl\n  train_path: {hf}/text/train.jsonl\n"
                      "  test_path: {hf}/text/test.jsonl\n  labels: [neg, neutral, pos]\n",
                   2000),
}


def raw_tcp_mb_s(nbytes):
    """Loopback TCP throughput carrying nbytes in 1 MiB writes (MB/s)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    got = [0]

    def receive():
        conn, _ = server.accept()
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        while True:
            n = conn.recv_into(view)
            if n == 0:
                break
            got[0] += n
        conn.close()
    t = threading.Thread(target=receive)
    t.start()
    out = socket.create_connection(("127.0.0.1", port))
    chunk = b"\0" * (1 << 20)
    t0 = time.time()
    left = nbytes
    while left > 0:
        out.sendall(chunk[:min(left, len(chunk))])
        left -= len(chunk)
    out.close()
    t.join()
    seconds = time.time() - t0
    server.close()
    return got[0] / seconds / 1e6


def run_model(a, name, clients, rounds, kill_client, profiled=True):
    """profiled: budgets in MiB by the machine's training profile (measured
    once before the run); else one layer each (the head), no profile."""
    classes, data, budget = MODELS[name]
    work = os.path.join(a.work, name)
    hf = os.path.join(a.work, "hf")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    subprocess.run([PY, os.path.join(HERE, "make_checkpoints.py"), hf, "--only", name],
                   check=True, stdout=subprocess.DEVNULL)
    hf_dir = os.path.join(hf, name)
    model_bytes = 0
    with open(os.path.join(hf_dir, "model.safetensors"), "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    for k, v in header.items():
        if k != "__metadata__" and not k.startswith("pooler"):
            model_bytes += v["data_offsets"][1] - v["data_offsets"][0]
    config = os.path.join(work, "run.yaml")
    with open(config, "w") as f:
        f.write(CONFIG.format(hf_dir=hf_dir, classes=classes, data=data.format(hf=hf),
                              clients=clients, rounds=rounds, work=work,
                              budget=MEMORY_BUDGET.format(mb=budget) if profiled
                              else "  unit: layers\n  distribution: fixed\n  value: 1\n"))
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    bin_dir = os.path.join(a.build, "bin")
    subprocess.run([os.path.join(bin_dir, "layerfl-partition"), "--config=" + config,
                    "--out=" + os.path.join(work, "shares")], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    # The training profile, measured once for the machine (the clients share it).
    if profiled:
        subprocess.run([os.path.join(bin_dir, "layerfl-client"), "--config=" + config,
                        "--config_mode=local", "--id=client-000",
                        "--data_dir=" + os.path.join(work, "shares", "client-000"),
                        "--print_profile"], check=True, env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    port_file = os.path.join(work, "port")
    logs = []

    def start(argv, log_name):
        log = open(os.path.join(work, log_name + ".log"), "w")
        logs.append(log)
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)

    t0 = time.time()
    procs = {"coordinator": start([os.path.join(bin_dir, "layerfl-coordinator"),
                                   "--config=" + config, "--listen=127.0.0.1:0",
                                   "--port_file=" + port_file, "--metrics_listen=",
                                   "--tick_ms=50",
                                   # Uploads go to disk as they arrive and are
                                   # folded from there (about a layer of each
                                   # in memory), received one at a time.
                                   "--receive_to_disk",
                                   "--max_uploads_in_flight=1",
                                   "--max_upload_mb_in_flight=%d"
                                   % (model_bytes // 2 ** 20 + 1)], "coordinator")}
    while not os.path.exists(port_file):
        if procs["coordinator"].poll() is not None:
            sys.exit("coordinator exited; see %s/coordinator.log" % work)
        time.sleep(0.05)
    time.sleep(0.1)
    port = open(port_file).read().split()[0]

    def client_argv(i, fault):
        # --config gives the machine-local fields (profile.cache_dir: the
        # profile measured above); the run's fields come from the coordinator.
        argv = [os.path.join(bin_dir, "layerfl-client"), "--coordinator=127.0.0.1:" + port,
                "--config=" + config, "--config_mode=run",
                "--id=client-%03d" % i, "--threads=1", "--poll_ms=1000",
                "--data_dir=" + os.path.join(work, "shares", "client-%03d" % i),
                "--hf_dir=" + hf_dir,
                "--download_cache_dir=" + os.path.join(work, "cache%d" % i)]
        if fault:
            argv.append("--fault_exit_after_download_layers=5")
        return argv
    for i in range(clients):
        procs["client%d" % i] = start(client_argv(i, kill_client and i == 0),
                                      "client%d%s" % (i, "_killed" if kill_client and i == 0
                                                      else ""))
    peak = {n: 0 for n in procs}
    restarted = False
    # The coordinator's resident memory over time, to read beside its log
    # (whose lines carry the same clock): where the peak comes from.
    rss_trace = open(os.path.join(work, "coordinator_rss.tsv"), "w")
    while any(p.poll() is None for p in procs.values()):
        for n, p in procs.items():
            v = status_kb(p.pid)
            if v is not None:
                peak[n] = max(peak[n], v)
        rss = status_kb(procs["coordinator"].pid, "VmRSS:")
        if rss is not None:
            now = time.time()
            rss_trace.write("%s.%03d\t%d\n" % (time.strftime("%H:%M:%S", time.localtime(now)),
                                                int(now * 1000) % 1000, rss // 1024))
        if kill_client and not restarted and procs["client0"].poll() is not None:
            if procs["client0"].returncode != 3:
                sys.exit("client0 exited %d, not by the fault" % procs["client0"].returncode)
            procs["client0"] = start(client_argv(0, False), "client0")
            restarted = True
        time.sleep(0.05)
    wall = time.time() - t0
    rss_trace.close()
    for log in logs:
        log.close()
    bad = {n: p.returncode for n, p in procs.items() if p.returncode}
    if bad:
        sys.exit("exit codes %s; logs in %s" % (bad, work))

    # What the clients did and what it cost, from the coordinator's metrics.
    score_from, trained = 10 ** 9, []
    phases = {}
    usage = {"score_s": [], "train_s": []}
    with open(os.path.join(work, "run", "metrics.jsonl")) as f:
        for line in f:
            rec = json.loads(line)
            for c in rec.get("clients", []):
                nz = [k for k, v in enumerate(c.get("scores") or []) if v != 0]
                if nz:
                    score_from = min(score_from, nz[0])
                if len(c.get("layers", [])) > len(trained):
                    trained = c["layers"]
            for k, v in rec.get("timing_ms", {}).items():
                phases.setdefault(k, []).append(v / 1000)
            for u in rec.get("usage", []):
                for k in usage:
                    if k in u:
                        usage[k].append(u[k])
    # Transfers, from the clients' logs.
    down, up, first = [], [], []
    resumed = ""
    for i in range(clients):
        text = open(os.path.join(work, "client%d.log" % i)).read()
        for m in re.finditer(r"fetched (\d+) layers, (\d+) bytes in ([0-9.]+) s", text):
            down.append(float(m.group(3)))
            if int(m.group(1)) > 0 and len(first) < clients and m.start() == text.find("fetched "):
                first.append((i, int(m.group(2)), float(m.group(3))))
        up += [float(s) for s in re.findall(r"values in ([0-9.]+) s", text)]
        if i == 0 and kill_client:
            m = re.search(r"download resumed: (\d+) layers were already held, (\d+) fetched", text)
            f = re.search(r"fetched (\d+) layers, (\d+) bytes", text)
            if m and f:
                resumed = ("client0 killed after 5 layers of its first download and restarted: "
                           "%s layers from its cache, %s fetched, %s bytes (a whole download: "
                           "%d bytes of values)" % (m.group(1), m.group(2), f.group(2), model_bytes))
    whole = [(b, s) for i, b, s in first if not (kill_client and i == 0)]
    examples = len(open(os.path.join(work, "shares", "client-000", "train.jsonl")).readlines()) \
        if name != "vit-b" else sum(len(fs) for _, _, fs in os.walk(
            os.path.join(work, "shares", "client-000")) if fs) - 1
    torch_line = subprocess.run(
        [PY, os.path.join(HERE, "pytorch_hf.py"), "--dir", hf_dir, "--classes", str(classes),
         "--examples", str(examples), "--batch", "8", "--steps", "2", "--score_batches", "1",
         "--score_from", str(score_from if score_from < 10 ** 9 else -1),
         "--train", ",".join(trained)],
        check=True, capture_output=True, text=True, env=env).stdout.strip()
    torch_kb = int(dict(kv.split("=") for kv in torch_line.split())["peak_kb"])
    tcp = raw_tcp_mb_s(model_bytes)

    mean = lambda xs: sum(xs) / len(xs) if xs else 0.0
    lines = ["## %s: %.1fM parameters (%.0f MiB float32), %d clients x %d rounds, run wall %.0f s"
             % (name, model_bytes / 4e6, model_bytes / 2 ** 20, clients, rounds, wall),
             "clients scored groups %s.. and trained at most %d groups (%s); %d examples each"
             % (score_from, len(trained), ",".join(trained), examples),
             "PyTorch on the same work: " + torch_line, ""]
    lines.append("%-12s %9s %8s %10s" % ("process", "peak MiB", "/ model", "/ PyTorch"))
    for n, v in peak.items():
        ratio = "" if n == "coordinator" else "%10.2f" % (v / torch_kb)
        lines.append("%-12s %9.0f %8.2f %s" % (n, v / 1024, v * 1024 / model_bytes, ratio))
    lines.append("%-12s %9.0f %8.2f" % ("pytorch", torch_kb / 1024, torch_kb * 1024 / model_bytes))
    lines.append("targets: coordinator <= 2 x model + 200 MiB = %.0f MiB; client <= 1.2 x PyTorch "
                 "= %.0f MiB" % ((2 * model_bytes + 200 * 2 ** 20) / 2 ** 20, 1.2 * torch_kb / 1024))
    lines.append("")
    lines.append("round time split (s, mean per client-task or per round): download %.2f, "
                 "scoring %.2f, training %.2f, upload %.2f; coordinator phases: %s"
                 % (mean(down), mean(usage["score_s"]), mean(usage["train_s"]), mean(up),
                    ", ".join("%s %.2f" % (k, mean(v)) for k, v in sorted(phases.items()))))
    if whole:
        # The clients' first downloads run at the same time (the round's
        # start): their bytes over the longest of them is what the
        # coordinator served.
        each = mean([b / s for b, s in whole]) / 1e6
        served = sum(b for b, _ in whole) / max(s for _, s in whole) / 1e6
        lines.append("first download (whole model, %d clients at once, each writing its download "
                     "cache): %.0f MB/s each, %.0f MB/s served / raw TCP on loopback (one stream) "
                     "%.0f MB/s = %.2f" % (len(whole), each, served, tcp, served / tcp))
    if resumed:
        lines.append(resumed)
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("build")
    p.add_argument("--work", default="/tmp/layerfl-foundation")
    p.add_argument("--out", default="")
    p.add_argument("--models", default="vit-b,bert-base")
    p.add_argument("--large", default="bert-large")
    p.add_argument("--clients", type=int, default=4)
    a = p.parse_args()
    os.makedirs(a.work, exist_ok=True)
    t0 = time.time()
    out = ["# LayerFL on foundation-model sized Hugging Face checkpoints "
           "(bench/foundation/run.py)",
           "date: %s" % time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
           "command: /usr/bin/python3 bench/foundation/run.py %s --models %s --large %s "
           "--clients %d" % (a.build, a.models, a.large, a.clients),
           "machine: %s; load average at start %s" % (
               os.uname().nodename, open("/proc/loadavg").read().split()[:3]), ""]
    for name in [m for m in a.models.split(",") if m]:
        out.append(run_model(a, name, a.clients, 2, kill_client=True))
        print(out[-1], flush=True)
    if a.large:
        out.append(run_model(a, a.large, 2, 1, kill_client=False, profiled=False))
        print(out[-1], flush=True)
    out.append("total wall %.0f s" % (time.time() - t0))
    text = "\n".join(out) + "\n"
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()

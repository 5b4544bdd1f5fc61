"""Peak memory of a LayerFL run on a ViT-B-sized model, against PyTorch.

  /usr/bin/python3 bench/foundation/memory.py BUILD_DIR [--clients N]
      [--budget_mb MB] [--work DIR] [--out FILE] [--extra YAML]

Writes the random-init ViT-B-sized TorchScript model (make_vit_b_script.py,
cached in --work), a run config (fashion-mnist, N clients, 2 rounds of 2
steps of batch 8, strategic selection with importance.metric sq_grad_norm,
budgets in memory), runs layerfl-coordinator + N layerfl-client daemons on
loopback, and samples every process's peak RSS (/proc/PID/status VmHWM) until
it exits. Then, in the same invocation, runs pytorch_peak.py on the same
model, examples per client, batch and steps, scoring the groups the clients
scored and training the most groups a client trained. Prints per process
peak / model bytes, and client peak / PyTorch peak.
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PY = "/usr/bin/python3"
sys.path.insert(0, HERE)
from make_vit_b_script import groups_yaml  # noqa: E402
from proc_memory import status_kb  # noqa: E402

MODEL_BYTES = 85191178 * 4

CONFIG = """seed: 1
threads: 1
model:
  kind: torchscript
  torchscript_path: {model}
  num_classes: 10
  common: [head]
{groups}data:
  dataset: fashion_mnist
  dir: /usr/share/datasets/fashion-mnist
  partition: iid
  num_clients: {clients}
  pretrain_fraction: 0.5
  max_test_examples: 256
train:
  optimizer: sgd
  lr: 0.01
  momentum: 0.9
  batch_size: 8
  local_steps: 2
importance:
  metric: sq_grad_norm
  batches: 2
pretrain:
  enabled: false
federated:
  rounds: 2
  clients_per_round: {clients}
  min_clients: {clients}
  selection_period: 1
  eval_every: 1
{eval_batch}  round_deadline_s: 900
  run_dir: {work}/run
  keep_checkpoints: 1
  resume: false
selection:
  strategy: strategic
budget:
  unit: memory
  distribution: fixed
  value: {budget_mb}
profile:
  cache_dir: {work}/profile_cache
  steps: 1
  reps: 1
transport:
  wait_for_clients: {clients}
  wait_for_clients_s: 600
  client_timeout_s: 600
{extra}"""


def main():
    p = argparse.ArgumentParser()
    p.add_argument("build")
    p.add_argument("--clients", type=int, default=2)
    p.add_argument("--budget_mb", type=float, default=480)
    p.add_argument("--work", default="/tmp/layerfl-foundation-memory")
    p.add_argument("--out", default="")
    p.add_argument("--eval_batch", type=int, default=0,
                   help="federated.eval_batch_size; 0 = not set (256)")
    p.add_argument("--extra", default="", help="YAML appended to the config")
    p.add_argument("--warm_profile", action="store_true",
                   help="keep the clients' cached training profiles (default: "
                   "cleared, so that each client profiles at start as on a "
                   "new machine, and its peak includes that)")
    a = p.parse_args()
    os.makedirs(a.work, exist_ok=True)
    model = os.path.join(a.work, "vit_b.pt")
    if not os.path.exists(model):
        subprocess.run([PY, os.path.join(HERE, "make_vit_b_script.py"), model],
                       check=True)
    config = os.path.join(a.work, "run.yaml")
    with open(config, "w") as f:
        f.write(CONFIG.format(model=model, groups=groups_yaml(),
                              clients=a.clients, work=a.work,
                              budget_mb=a.budget_mb,
                              eval_batch=(f"  eval_batch_size: {a.eval_batch}\n"
                                          if a.eval_batch else ""),
                              extra=a.extra))
    subprocess.run(["rm", "-rf", os.path.join(a.work, "run")], check=True)
    if not a.warm_profile:
        subprocess.run(["rm", "-rf", os.path.join(a.work, "profile_cache")],
                       check=True)
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    bin_dir = os.path.join(a.build, "bin")
    port_file = os.path.join(a.work, "port")
    if os.path.exists(port_file):
        os.remove(port_file)
    logs = []

    def start(argv, name):
        log = open(os.path.join(a.work, name + ".log"), "w")
        logs.append(log)
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                env=env)

    t0 = time.time()
    procs = {"coordinator": start(
        [os.path.join(bin_dir, "layerfl-coordinator"), "--config=" + config,
         "--listen=127.0.0.1:0", "--port_file=" + port_file,
         "--metrics_listen=", "--tick_ms=50"], "coordinator")}
    while not os.path.exists(port_file):
        if procs["coordinator"].poll() is not None:
            sys.exit("coordinator exited; see " + a.work + "/coordinator.log")
        time.sleep(0.05)
    time.sleep(0.1)
    port = open(port_file).read().split()[0]
    for i in range(a.clients):
        procs[f"client{i}"] = start(
            [os.path.join(bin_dir, "layerfl-client"),
             "--config=" + config,  # model.torchscript_path is local
             "--coordinator=127.0.0.1:" + port, f"--partition={i}",
             "--threads=1", "--poll_ms=500"], f"client{i}")
    peak = {name: 0 for name in procs}
    # Each process's RSS over time (wall clock, as its log's), to see where
    # its peak falls: WORK/rss_<name>.tsv.
    timelines = {name: open(os.path.join(a.work, f"rss_{name}.tsv"), "w")
                 for name in procs}
    while any(pr.poll() is None for pr in procs.values()):
        for name, pr in procs.items():
            kb = status_kb(pr.pid)
            if kb is not None:
                peak[name] = max(peak[name], kb)
                rss = status_kb(pr.pid, "VmRSS:")
                stamp = time.strftime("%H:%M:%S", time.localtime())
                timelines[name].write(f"{stamp}.{int(time.time() * 1000) % 1000:03d}"
                                      f"\t{rss}\t{kb}\n")
        time.sleep(0.05)
    for f in timelines.values():
        f.close()
    wall = time.time() - t0
    for log in logs:
        log.close()
    bad = {n: pr.returncode for n, pr in procs.items() if pr.returncode}
    if bad:
        sys.exit(f"exit codes {bad}; logs in {a.work}")

    # What the clients did: groups scored (from the first nonzero score)
    # and trained, from the coordinator's metrics.
    score_from, trained = 10**9, []
    examples = 0
    with open(os.path.join(a.work, "run", "metrics.jsonl")) as f:
        for line in f:
            rec = json.loads(line)
            for c in rec.get("clients", []):
                s = c.get("scores") or []
                nz = [k for k, v in enumerate(s) if v != 0]
                if nz:
                    score_from = min(score_from, nz[0])
                if len(c.get("layers", [])) > len(trained):
                    trained = c["layers"]
    if score_from == 10**9:
        score_from = -1
    # Examples per client: fashion-mnist's 60000 training images, half held
    # out for pretraining, split iid.
    examples = 30000 // a.clients
    torch_run = subprocess.run(
        [PY, os.path.join(HERE, "pytorch_peak.py"), "--model", model,
         "--examples", str(examples), "--batch", "8", "--steps", "2",
         "--score_batches", "2", "--score_from", str(score_from),
         "--train", ",".join(trained), "--threads", "1"],
        check=True, capture_output=True, text=True, env=env).stdout.strip()
    torch_kb = dict(kv.split("=") for kv in torch_run.split())
    torch_peak = int(torch_kb["peak_kb"])

    lines = [
        "# LayerFL peak RSS on a ViT-B-sized model (bench/foundation/memory.py)",
        f"date: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}",
        f"command: /usr/bin/python3 bench/foundation/memory.py {a.build} "
        f"--clients {a.clients} --budget_mb {a.budget_mb:g} "
        f"--eval_batch {a.eval_batch}"
        + (" --warm_profile" if a.warm_profile else "")
        + (f" --extra '{a.extra}'" if a.extra else ""),
        f"model: torchvision VisionTransformer 12x768 (28x28, patch 7), "
        f"85191178 params = {MODEL_BYTES / 2**20:.1f} MiB float32; "
        f"{a.clients} clients x 2 rounds, batch 8, 2 local steps, "
        f"importance sq_grad_norm over 2 batches, budget {a.budget_mb:g} MiB, "
        f"evaluation on 256 test images in batches of {a.eval_batch or 256}",
        "clients profiled at start: "
        + ("no (cached profiles)" if a.warm_profile else "yes (cache cleared)"),
        f"clients scored groups {score_from}.. and trained at most "
        f"{len(trained)} groups ({','.join(trained)}); run wall {wall:.0f} s",
        f"PyTorch (same model, {examples} examples, same scoring and "
        f"training): {torch_run}",
        "",
        f"{'process':<12} {'peak MiB':>9} {'/ model':>8} {'/ PyTorch':>10}",
    ]
    for name, kb in peak.items():
        ratio = f"{kb / torch_peak:10.2f}" if name != "coordinator" else ""
        lines.append(f"{name:<12} {kb / 1024:9.0f} "
                     f"{kb * 1024 / MODEL_BYTES:8.2f} {ratio}")
    lines.append(f"{'pytorch':<12} {torch_peak / 1024:9.0f} "
                 f"{torch_peak * 1024 / MODEL_BYTES:8.2f}")
    coord_target = (2 * MODEL_BYTES + 200 * 2**20) / 2**20
    lines.append("")
    lines.append(f"targets: coordinator <= 2 x model + 200 MiB = "
                 f"{coord_target:.0f} MiB; client <= 1.2 x PyTorch = "
                 f"{1.2 * torch_peak / 1024:.0f} MiB")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()

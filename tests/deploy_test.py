#!/usr/bin/env python3
"""Checks deploy/ (Dockerfile, docker-compose.yml, Kubernetes manifests)
without a Docker engine or a cluster.

  deploy_test.py SOURCE_DIR BIN_DIR

1. The compose file is valid: `docker-compose config` (Debian's docker-compose,
   which parses, interpolates and validates against the compose schema with no
   engine) must accept it; without docker-compose it falls back to a plain YAML
   parse and says so.
2. The Dockerfile: Debian 12 (bookworm) stages `build` and `runtime`; the build
   stage installs exactly scripts/setup.sh's build packages and copies sources
   that exist; the runtime stage installs a package for every shared library
   the built daemons link directly (readelf NEEDED -> ldd -> dpkg -S), copies
   binaries that are CMake targets, sets OMP_WAIT_POLICY=PASSIVE; every apt
   package name is known to apt-cache (where apt lists exist).
3. Every command, flag and path the compose file names exists: each service's
   binary is installed by the Dockerfile and built here, each --flag is listed
   by the built binary's help, --config paths map (through the Dockerfile's
   COPY) to config files in the repository, --token_file is the service's
   secret, the clients dial the coordinator by service name and port, the
   client ids are exactly client-000..data.num_clients-1 of that config, each
   client mounts only its own share (read-only, at its --data_dir, from the
   directory the layerfl-partition service writes), the dataset volume lands
   on the config's data.dir for the coordinator and the partition service,
   and deploy/make_secrets.sh makes the secret and certificates the compose
   file mounts.
4. Kubernetes (deploy/kustomization.yaml, deploy/k8s/): `kubectl kustomize`
   builds them (where kubectl is installed; else the files are read as
   they are); every resource file is listed; the secret holds exactly what
   make_secrets.sh makes; every container runs the image with installed
   binaries and flags their help lists, reading secrets, configs, data and
   state from mounted volumes; the Service selects the coordinator and
   carries its --listen port; the clients dial the Service by name with the
   certificate's name, one per partition (an Indexed Job of
   data.num_clients), each seeing only its own share; the worker Job
   (several clients per pod) is suspended, and the shell's own expansion of
   each pod's commands shows that every client of the run is hosted exactly
   once, each pod writing exactly its clients' shares and reading them
   read-only, without the whole dataset.
Exit 0 pass, 1 fail, 77 skipped (no Python yaml module).
"""
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

try:
    import yaml
except ImportError:
    print("SKIP: no Python yaml module (python3-yaml, which scripts/setup.sh's "
          "docker-compose and python3-torch bring)")
    sys.exit(77)

SRC, BIN = sys.argv[1], sys.argv[2]
DEPLOY = os.path.join(SRC, "deploy")
COMPOSE = os.path.join(DEPLOY, "docker-compose.yml")
DOCKERFILE = os.path.join(DEPLOY, "Dockerfile")
# In scripts/setup.sh but not needed to build the daemons: the dataset (a
# volume), the Python side, the test tools.
SETUP_ONLY = {"dataset-fashion-mnist", "python3-torch", "iproute2", "openssl", "debootstrap",
              "docker-compose", "prometheus", "chromium", "fonts-dejavu-core",
              # the tokenizers' tests only: spm_train and Python references
              "sentencepiece", "python3-sentencepiece", "python3-regex"}
# Runtime libraries loaded through another library, named on purpose:
# libtorch1.13 accepts any BLAS, LayerFL wants OpenBLAS with OpenMP (setup.sh).
RUNTIME_EXTRA = {"libopenblas0-openmp"}
DATA_DIR_DEFAULT = "/usr/share/datasets/fashion-mnist"  # common/config/config.h

failures = []


passed = 0


def check(ok, what, quiet=False):
    """Records one check; prints it unless it passed and `quiet`."""
    global passed
    if not ok or not quiet:
        print(("ok    " if ok else "FAIL  ") + what)
    if ok:
        passed += 1
    else:
        failures.append(what)
    return ok


def run(argv, **kw):
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, **kw)


# ---- 1. the compose file is valid -------------------------------------------
tmp = tempfile.mkdtemp(prefix="deploy_test.")
secrets_dir, certs_dir = os.path.join(tmp, "secrets"), os.path.join(tmp, "certs")
r = run(["bash", os.path.join(DEPLOY, "make_secrets.sh"), secrets_dir, certs_dir])
check(r.returncode == 0, "deploy/make_secrets.sh runs: " + (r.stderr.strip() or "exit 0"))
env = dict(os.environ, LAYERFL_SECRETS=secrets_dir, LAYERFL_CERTS=certs_dir)
for var in ("DOCKER_HOST", "DOCKER_CONTEXT", "COMPOSE_FILE", "LAYERFL_DATA"):
    env.pop(var, None)

compose_bin = shutil.which("docker-compose")
if compose_bin:
    r = run([compose_bin, "-f", COMPOSE, "config"], env=env, cwd=DEPLOY)
    if not check(r.returncode == 0, "docker-compose config accepts the file"):
        print(r.stderr)
        sys.exit(1)
    compose = yaml.safe_load(r.stdout)
    print("      (validated by " + run([compose_bin, "version", "--short"]).stdout.strip()
          + " 'docker-compose config', no engine)")
else:
    print("NOTE  docker-compose is not installed (scripts/setup.sh installs it): "
          "falling back to a plain YAML parse, no compose schema validation")
    text = open(COMPOSE).read()

    def interpolate(m):
        return env.get(m.group(1)) or m.group(2)
    text = re.sub(r"\$\{(\w+):-([^}]*)\}", interpolate, text)
    compose = yaml.safe_load(text)
    for s in compose.get("services", {}).values():
        if isinstance(s.get("build"), dict):
            s["build"]["context"] = os.path.normpath(
                os.path.join(DEPLOY, s["build"]["context"]))
    for s in compose.get("secrets", {}).values():
        s["file"] = os.path.normpath(os.path.join(DEPLOY, s["file"]))

services = compose.get("services", {})
check(isinstance(services, dict) and services, "the compose file has services")

# ---- 2. the Dockerfile ------------------------------------------------------
lines = []
for raw in open(DOCKERFILE).read().replace("\\\n", " ").splitlines():
    raw = raw.strip()
    if raw and not raw.startswith("#"):
        lines.append(raw)
stages = {}  # name -> list of (INSTRUCTION, rest)
order = []
for line in lines:
    instr, _, rest = line.partition(" ")
    instr = instr.upper()
    if instr == "FROM":
        m = re.match(r"(\S+)\s+AS\s+(\S+)", rest, re.I)
        check(m is not None, "FROM names its stage: " + line)
        name = m.group(2) if m else rest
        stages[name] = [("FROM", m.group(1) if m else rest)]
        order.append(name)
    elif order:
        stages[order[-1]].append((instr, rest.strip()))
check(order == ["build", "runtime"], "Dockerfile stages are build, runtime: %s" % order)
for name in order:
    image = stages[name][0][1]
    check(re.fullmatch(r"debian:bookworm(-slim)?", image) is not None,
          "stage %s is Debian 12: FROM %s" % (name, image))


def apt_packages(stage):
    pkgs = []
    for instr, rest in stages.get(stage, []):
        if instr == "RUN" and "apt-get install" in rest:
            for cmd in rest.split("&&"):
                if "apt-get install" in cmd:
                    pkgs += [w for w in shlex.split(cmd.split("apt-get install", 1)[1])
                             if not w.startswith("-")]
    return pkgs


setup = open(os.path.join(SRC, "scripts", "setup.sh")).read()
m = re.search(r"^PACKAGES=\((.*?)^\)", setup, re.S | re.M)
setup_pkgs = set(re.sub(r"#.*", "", m.group(1)).split()) if m else set()
check("docker-compose" in setup_pkgs, "scripts/setup.sh installs docker-compose")
build_pkgs = apt_packages("build")
check(set(build_pkgs) == setup_pkgs - SETUP_ONLY,
      "build stage installs setup.sh's build packages (missing %s, extra %s)"
      % (sorted(setup_pkgs - SETUP_ONLY - set(build_pkgs)),
         sorted(set(build_pkgs) - setup_pkgs)))
for instr, rest in stages.get("build", []):
    if instr == "COPY":
        for src in shlex.split(rest)[:-1]:
            check(os.path.exists(os.path.join(SRC, src)), "build stage COPY %s exists" % src)
build_cmds = " ".join(rest for instr, rest in stages.get("build", []) if instr == "RUN")
check("-G Ninja" in build_cmds and "cmake --build" in build_cmds,
      "build stage builds with CMake + Ninja")

# Binaries: COPY --from=build <build tree path> <dest>, each a CMake target.
targets = set()
for root, _, files in os.walk(SRC):
    if os.path.relpath(root, SRC).split(os.sep)[0].startswith(("build", ".git")):
        continue
    if "CMakeLists.txt" in files:
        text = open(os.path.join(root, "CMakeLists.txt")).read()
        targets |= set(re.findall(r"add_executable\(\s*([\w.+-]+)", text))
        # A MODULE library's file: lib<OUTPUT_NAME or target>.so.
        targets |= {"lib%s.so" % t for t in
                    re.findall(r"add_library\(\s*([\w.+-]+)\s+MODULE", text)}
installed = {}  # basename -> absolute path in the image
copies = []     # (image dest dir, repo source)
workdir = "/"
runtime_env = {}
for instr, rest in stages.get("runtime", []):
    words = shlex.split(rest)
    if instr == "COPY" and words and words[0] == "--from=build":
        for src in words[1:-1]:
            name = os.path.basename(src)
            check(name in targets, "runtime binary %s is a CMake target" % name)
            dest = words[-1] if not words[-1].endswith("/") else words[-1] + name
            installed[name] = dest
    elif instr == "COPY":
        for src in words[:-1]:
            check(os.path.exists(os.path.join(SRC, src)), "runtime COPY %s exists" % src)
            copies.append((words[-1].rstrip("/"), src.rstrip("/")))
    elif instr == "ENV":
        for kv in words:
            k, _, v = kv.partition("=")
            runtime_env[k] = v
    elif instr == "WORKDIR":
        workdir = rest
check(runtime_env.get("OMP_WAIT_POLICY") == "PASSIVE",
      "runtime stage sets OMP_WAIT_POLICY=PASSIVE")
check(set(installed) == {"layerfl-coordinator", "layerfl-client", "layerfl-partition",
                          "layerfl-export", "liblayerfl_spm_shim.so"},
      "runtime stage holds the two daemons, layerfl-partition, layerfl-export and the "
      "SentencePiece shim: %s" % sorted(installed))
for name, dest in installed.items():
    check(os.path.dirname(dest) in ("/usr/local/bin", "/usr/bin"),
          "%s is installed on PATH (%s)" % (name, dest))
check(os.path.dirname(installed.get("liblayerfl_spm_shim.so", "")) ==
      os.path.dirname(installed.get("layerfl-client", "?")),
      "the SentencePiece shim sits next to the binaries, where they load it from")

# Runtime packages cover every library the daemons link directly.
runtime_pkgs = set(apt_packages("runtime"))
check(not [p for p in runtime_pkgs if p.endswith("-dev") or p in ("cmake", "ninja-build")],
      "runtime stage installs no build tools or -dev packages")
check(RUNTIME_EXTRA <= runtime_pkgs, "runtime stage installs %s" % sorted(RUNTIME_EXTRA))
for name in sorted(installed):
    path = os.path.join(BIN, name)
    if not check(os.path.exists(path), "%s is built (%s)" % (name, path)):
        continue
    needed = re.findall(r"\(NEEDED\).*\[(.+)\]", run(["readelf", "-d", path]).stdout)
    resolved = dict(re.findall(r"^\s*(\S+) => (\S+)", run(["ldd", path]).stdout, re.M))
    # One dpkg -S for all: each library by its path and its real path.
    paths = {lib: [p for p in (resolved.get(lib), os.path.realpath(resolved.get(lib) or ""))
                   if p] for lib in needed}
    found = dict(reversed(line.split(": ", 1)) for line in run(
        ["dpkg", "-S"] + sorted({p for ps in paths.values() for p in ps})).stdout.splitlines()
        if ": " in line)
    owners = set()
    for lib in needed:
        owner = next((found[p].split(":")[0] for p in paths[lib] if p in found), None)
        if check(owner is not None, "%s: %s belongs to a Debian package (%s)"
                 % (name, lib, owner), quiet=True):
            owners.add(owner)
    check(owners <= runtime_pkgs, "%s: runtime stage installs the packages of its %d "
          "linked libraries (missing %s)" % (name, len(needed), sorted(owners - runtime_pkgs)))

if os.listdir("/var/lib/apt/lists") if os.path.isdir("/var/lib/apt/lists") else False:
    wanted = set(build_pkgs) | runtime_pkgs
    known = set(re.findall(r"^Package: (\S+)", run(
        ["apt-cache", "show", "--no-all-versions"] + sorted(wanted)).stdout, re.M))
    check(wanted <= known, "apt-cache knows all %d package names (unknown: %s)"
          % (len(wanted), sorted(wanted - known)))
else:
    print("NOTE  no apt lists here: package names not checked against apt-cache")


# ---- 3. commands, flags and paths of the compose file -----------------------
def help_flags(binary):
    """The flags the built binary's help lists (its own, not Abseil's)."""
    r = run([binary, "--help"])
    out = r.stdout + r.stderr
    # Abseil's --help lists only flags of a file named after the program;
    # the daemons' flags live in main.cc, which --helpfull shows.
    if "No flags matched" in out or "--" not in out:
        r = run([binary, "--helpfull"])
        out = r.stdout + r.stderr
    flags, own = set(), False
    for line in out.splitlines():
        m = re.match(r"\s*Flags from (\S+):", line)
        if m:
            own = "absl/" not in m.group(1)
            continue
        m = re.match(r"\s+--(\w+) ", line)
        if m and own:
            flags.add(m.group(1))
    return flags


def image_path_to_repo(path):
    for dest, src in copies:
        if path == dest or path.startswith(dest + "/"):
            return os.path.join(SRC, src + path[len(dest):])
    return None


flag_cache = {}
coordinator_service, coordinator_port, coordinator_config = None, None, None
clients = []  # (service, config path, client id, coordinator target, num_clients)
partition_services = []
client_shares, written_shares = set(), set()
images = {s.get("image") for s in services.values()}
check(len(images) == 1 and None not in images, "every service runs one image: %s" % images)
built = [n for n, s in services.items() if "build" in s]
for n in built:
    b = services[n]["build"]
    dockerfile = os.path.join(b.get("context", ""), b.get("dockerfile", "Dockerfile"))
    check(os.path.samefile(b["context"], SRC) and os.path.samefile(dockerfile, DOCKERFILE),
          "service %s builds deploy/Dockerfile from the repository root" % n)
check(len(built) == 1, "one service builds the image: %s" % built)
top_secrets = compose.get("secrets", {}) or {}

for n, s in sorted(services.items()):
    cmd = s.get("command")
    if isinstance(cmd, str):
        cmd = shlex.split(cmd)
    if not check(isinstance(cmd, list) and cmd, "service %s has a command" % n):
        continue
    check("entrypoint" not in s, "service %s keeps the image's entrypoint" % n)
    binary = cmd[0]
    if not check(binary in installed, "service %s runs %s, which the image installs"
                 % (n, binary)):
        continue
    if binary not in flag_cache:
        flag_cache[binary] = help_flags(os.path.join(BIN, binary))
        check(len(flag_cache[binary]) >= 3, "%s --help lists its flags (%d)"
              % (binary, len(flag_cache[binary])))
    args, i = {}, 1
    while i < len(cmd):
        a = cmd[i]
        if not check(a.startswith("--"), "service %s: '%s' is a flag" % (n, a), quiet=True):
            i += 1
            continue
        name, eq, value = a[2:].partition("=")
        if not eq and i + 1 < len(cmd) and not cmd[i + 1].startswith("--"):
            value, i = cmd[i + 1], i + 1
        check(name in flag_cache[binary], "service %s: %s accepts --%s" % (n, binary, name))
        args[name] = value
        i += 1
    secret_names = [x if isinstance(x, str) else x.get("source")
                    for x in s.get("secrets", []) or []]
    config, config_yaml = args.get("config"), None
    repo_config = image_path_to_repo(config) if config else None
    if check(repo_config is not None and os.path.isfile(repo_config),
             "service %s: --config=%s is %s in the repository"
             % (n, config, os.path.relpath(repo_config, SRC) if repo_config else "nowhere")):
        config_yaml = yaml.safe_load(open(repo_config)) or {}
    for flag in ("token_file", "tokens_file"):
        if flag in args:
            m = re.fullmatch(r"/run/secrets/([\w.-]+)", args[flag])
            check(m is not None and m.group(1) in secret_names and m.group(1) in top_secrets,
                  "service %s: --%s=%s is its secret" % (n, flag, args[flag]))
    for sec in secret_names:
        f = (top_secrets.get(sec) or {}).get("file", "")
        check(os.path.isfile(f) and os.path.getsize(f) > 0,
              "secret %s: %s is made by make_secrets.sh" % (sec, os.path.relpath(f, tmp)))
    data_dir = ((config_yaml or {}).get("data") or {}).get("dir", DATA_DIR_DEFAULT)
    mounts = {}
    for v in s.get("volumes", []) or []:
        if isinstance(v, str):
            parts = v.split(":")
            v = {"source": parts[0], "target": parts[1], "read_only": parts[2:] == ["ro"]}
        mounts[v.get("target")] = v
    data_mount = mounts.get(data_dir)
    if binary == "layerfl-client":
        # A client sees its own share only: a read-only volume at --data_dir
        # whose host side is <shares>/<its id>, and not the whole dataset.
        own = mounts.get(args.get("data_dir"))
        check(own is not None and own.get("read_only") and
              os.path.basename(os.path.normpath(own.get("source", ""))) == args.get("id"),
              "service %s: --data_dir=%s is a read-only volume of its own share (%s)"
              % (n, args.get("data_dir"), own.get("source") if own else "no volume"))
        check(data_mount is None, "service %s does not see the whole dataset" % n)
        if own is not None:
            client_shares.add(os.path.dirname(os.path.normpath(own.get("source", ""))))
    elif check(data_mount is not None and data_mount.get("read_only"),
               "service %s: the dataset is a read-only volume at data.dir %s" % (n, data_dir)):
        src = data_mount.get("source")
        if not os.path.isdir(src):
            print("NOTE  %s (the dataset volume's host side) is not here" % src)
    if binary == "layerfl-partition":
        out = mounts.get(args.get("out"))
        if check(out is not None and not out.get("read_only"),
                 "service %s: --out=%s is a writable volume" % (n, args.get("out"))):
            written_shares.add(os.path.normpath(out.get("source", "")))
    for target, v in mounts.items():
        src = v.get("source", "")
        if src.startswith("/") and src.startswith(certs_dir):
            check(os.path.isfile(src) and v.get("read_only"),
                  "service %s: %s -> %s is one of make_secrets.sh's files, read-only "
                  "(no container mounts the whole certificates directory)"
                  % (n, os.path.relpath(src, tmp), target))
    mounted_files = {os.path.basename(v.get("source", "")) for v in mounts.values()}
    if binary == "layerfl-client":
        # One identity per client: its own certificate (naming its id), key
        # and token, and nobody else's key.
        cid = args.get("id", "")
        check(os.path.basename(args.get("tls_cert", "")) == cid + ".pem" and
              os.path.basename(args.get("tls_key", "")) == cid + ".key",
              "service %s: presents its own certificate %s.pem" % (n, cid))
        r = run(["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in",
                 os.path.join(certs_dir, cid + ".pem")])
        check("DNS:%s" % cid in r.stdout, "certificate %s.pem names %s: %s"
              % (cid, cid, r.stdout.strip().splitlines()[-1:] if r.stdout else "none"))
        others = [f for f in mounted_files if f.endswith(".key") and f != cid + ".key"]
        check(not others, "service %s mounts no other client's key: %s" % (n, others))
        files = sorted(os.path.basename((top_secrets.get(x) or {}).get("file", ""))
                       for x in secret_names)
        check(files == [cid + ".identity", cid + ".token"],
              "service %s: its secrets are its own token and identity key (%s)" % (n, files))
        if "identity_key" in args:
            m = re.fullmatch(r"/run/secrets/([\w.-]+)", args["identity_key"])
            check(m is not None and m.group(1) in secret_names,
                  "service %s: --identity_key is its secret" % n)
            peers = mounts.get(args.get("peer_identities", ""))
            check(peers is not None and os.path.basename(peers.get("source", "")) == "identities.txt",
                  "service %s: --peer_identities is make_secrets.sh's identities.txt" % n)
            # The client accepts them: its seed's public key is its line of
            # identities.txt (exit 2 would name the flag; 1 = it then could
            # not reach a coordinator, as expected here). Once: each run
            # starts a LibTorch process.
            if cid == "client-000":
                r = run([os.path.join(BIN, "layerfl-client"), "--id", cid,
                         "--identity_key", os.path.join(secrets_dir, cid + ".identity"),
                         "--peer_identities", os.path.join(certs_dir, "identities.txt"),
                         "--coordinator", "127.0.0.1:1", "--give_up_s", "1",
                         "--partition", "0"])
                check(r.returncode != 2 and "identity" not in r.stderr,
                      "service %s: layerfl-client accepts its identity key and "
                      "identities.txt (%s)"
                      % (n, r.stderr.strip().splitlines()[-1:] if r.stderr else "ok"))
    if binary == "layerfl-coordinator":
        check(not [f for f in mounted_files if f.startswith("client-") or f.startswith("worker-")],
              "service %s holds no client's key" % n)
    if binary == "layerfl-coordinator":
        check(coordinator_service is None, "one coordinator service")
        coordinator_service, coordinator_config = n, config
        coordinator_port = args.get("listen", "0.0.0.0:50051").rsplit(":", 1)[1]
        run_dir = ((config_yaml or {}).get("federated") or {}).get("run_dir", "runs/demo")
        state = os.path.normpath(os.path.join(workdir, run_dir))
        check(any(state == t or state.startswith(t + "/") for t in mounts
                  if (mounts[t].get("type") == "volume" or not mounts[t].get("read_only"))),
              "service %s: federated.run_dir (%s) is on a writable volume" % (n, state))
    elif binary == "layerfl-client":
        num_clients = ((config_yaml or {}).get("data") or {}).get("num_clients")
        clients.append((n, config, args.get("id", ""),
                        args.get("coordinator", ""), num_clients))
    else:
        check(config == coordinator_config or coordinator_config is None,
              "service %s uses the coordinator's config" % n)
        partition_services.append(n)

check(coordinator_service is not None, "a coordinator service")
ids = sorted(c[2] for c in clients)
for n, config, _, target, num_clients in clients:
    check(config == coordinator_config, "service %s uses the coordinator's config" % n)
    check(target == "%s:%s" % (coordinator_service, coordinator_port),
          "service %s dials the coordinator by service name: %s" % (n, target))
if clients:
    check(ids == ["client-%03d" % i for i in range(clients[0][4] or 0)],
          "client ids %s are client-000..data.num_clients-1 (%s), the ids "
          "layerfl-partition names the shares by" % (ids, clients[0][4]))
check(partition_services and client_shares and client_shares == written_shares,
      "the clients' shares (%s) are where the layerfl-partition service %s writes them (%s)"
      % (sorted(client_shares), partition_services, sorted(written_shares)))
check(len(clients) >= 2, "several client services (%d)" % len(clients))
r = run(["openssl", "verify", "-CAfile", os.path.join(certs_dir, "ca.pem"),
         os.path.join(certs_dir, "coordinator.pem"), os.path.join(certs_dir, "client-000.pem"),
         os.path.join(certs_dir, "worker-0.pem")])
check(r.returncode == 0, "make_secrets.sh's certificates verify against its CA")
r = run(["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in",
         os.path.join(certs_dir, "coordinator.pem")])
san = r.stdout.strip().splitlines()[-1].strip() if r.stdout.strip() else ""
check("DNS:%s," % coordinator_service in san + ",",
      "the coordinator certificate names the service: %s" % san)
for script in ("make_secrets.sh", "netns_trial.sh"):
    check(run(["bash", "-n", os.path.join(DEPLOY, script)]).returncode == 0,
          "deploy/%s parses (bash -n)" % script)

# ---- 4. Kubernetes ----------------------------------------------------------
KUSTOMIZATION = os.path.join(DEPLOY, "kustomization.yaml")
kust = yaml.safe_load(open(KUSTOMIZATION))
resources = kust.get("resources", [])
k8s_files = sorted("k8s/" + f for f in os.listdir(os.path.join(DEPLOY, "k8s"))
                   if f.endswith(".yaml"))
check(sorted(resources) == k8s_files,
      "kustomization lists every file of deploy/k8s: %s" % resources)
generated = {}  # secret name -> set of keys
for g in kust.get("secretGenerator", []):
    keys = set()
    for f in g.get("files", []):
        key, eq, path = f.partition("=")
        path = path if eq else key
        key = os.path.basename(key)
        made = os.path.join(tmp, path)  # secrets/..., certs/... as make_secrets.sh wrote them
        check(os.path.isfile(made), "secret %s: %s is made by make_secrets.sh" % (g["name"], path))
        keys.add(key)
    generated[g["name"]] = keys
kubectl = shutil.which("kubectl")
docs = None
if kubectl:
    staged = os.path.join(tmp, "kustomize")
    shutil.copytree(os.path.join(DEPLOY, "k8s"), os.path.join(staged, "k8s"))
    shutil.copy(KUSTOMIZATION, staged)
    shutil.copytree(secrets_dir, os.path.join(staged, "secrets"))
    shutil.copytree(certs_dir, os.path.join(staged, "certs"))
    r = run([kubectl, "kustomize", staged])
    if check(r.returncode == 0, "kubectl kustomize builds deploy/: " + (r.stderr.strip() or "ok")):
        docs = [d for d in yaml.safe_load_all(r.stdout) if d]
else:
    print("NOTE  kubectl is not installed: reading deploy/k8s as written (no kustomize build)")
if docs is None:
    docs = [d for f in resources for d in yaml.safe_load_all(open(os.path.join(DEPLOY, f))) if d]
    for d in docs:
        d.setdefault("metadata", {}).setdefault("namespace", kust.get("namespace"))
by_kind = {}
for d in docs:
    by_kind.setdefault(d["kind"], []).append(d)
namespaces = {d["metadata"]["name"] for d in by_kind.get("Namespace", [])}
for d in docs:
    if d["kind"] != "Namespace":
        check(d["metadata"].get("namespace") in namespaces,
              "%s/%s is in the layerfl namespace" % (d["kind"], d["metadata"]["name"]), quiet=True)


def shell_commands(container):
    """The command lines a container runs: its command, or each part of an
    `sh -c` script split at && and ;, with `exec` dropped."""
    cmd = container.get("command", []) + container.get("args", [])
    if cmd[:2] == ["sh", "-c"] and len(cmd) == 3:
        out = []
        script = cmd[2].replace('$(printf %03d "$JOB_COMPLETION_INDEX")', "{index:03}")
        for part in re.split(r"&&|;", script):
            words = shlex.split(part)
            if words and words[0] == "exec":
                words = words[1:]
            if words:
                out.append(words)
        return out
    return [cmd]


def flag_args(binary, words, where):
    args = {}
    for w in words[1:]:
        name, eq, value = w[2:].partition("=")
        if check(w.startswith("--") and eq, "%s: '%s' is a --flag=value" % (where, w), quiet=True):
            check(name in flag_cache.setdefault(binary, help_flags(os.path.join(BIN, binary))),
                  "%s: %s accepts --%s" % (where, binary, name), quiet=True)
            args[name] = value
    return args


services_k8s = {d["metadata"]["name"]: d for d in by_kind.get("Service", [])}
coordinator_target, k8s_cert_name, client_job = None, None, None
worker_jobs = []
for d in by_kind.get("StatefulSet", []) + by_kind.get("Job", []):
    name = "%s/%s" % (d["kind"], d["metadata"]["name"])
    spec = d["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"].get("labels", {})
    if labels.get("role") == "worker":
        worker_jobs.append(d)  # checked below, pod by pod
        continue
    if d["kind"] == "StatefulSet":
        sel = spec["selector"]["matchLabels"]
        check(all(labels.get(k) == v for k, v in sel.items()),
              "%s: its selector matches its pods" % name)
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    claims = {c["metadata"]["name"] for c in spec.get("volumeClaimTemplates", [])}
    for c in pod.get("initContainers", []) + pod.get("containers", []):
        where = "%s container %s" % (name, c["name"])
        check(c.get("image") in images, "%s runs the compose file's image %s"
              % (where, c.get("image")))
        mounts = {}
        for m in c.get("volumeMounts", []):
            check(m["name"] in volumes or m["name"] in claims,
                  "%s: volume %s is defined" % (where, m["name"]), quiet=True)
            mounts[m["mountPath"]] = m

        def mounted(path):
            hits = [mp for mp in mounts if path == mp or path.startswith(mp + "/")]
            return mounts[max(hits, key=len)] if hits else None
        for words in shell_commands(c):
            binary = words[0]
            if binary not in installed:
                check(binary in ("cp", "mv", "mkdir"), "%s: %s is a shell helper or an "
                      "installed binary" % (where, binary))
                continue
            args = flag_args(binary, words, where)
            config = args.get("config")
            repo_config = image_path_to_repo(config) if config else None
            cfg = {}
            if check(repo_config is not None and os.path.isfile(repo_config),
                     "%s: --config=%s is in the repository" % (where, config)):
                cfg = yaml.safe_load(open(repo_config)) or {}
            data_dir = (cfg.get("data") or {}).get("dir", DATA_DIR_DEFAULT)
            n_pods = (cfg.get("data") or {}).get("num_clients") or 1
            for flag in ("token_file", "tokens_file", "tls_cert", "tls_key", "tls_ca",
                         "tls_client_ca"):
                if flag in args:
                    m = mounted(args[flag])
                    secret = (volumes.get(m["name"], {}).get("secret") or {}).get("secretName") if m else None
                    base = os.path.basename(args[flag])
                    # Per pod: {index:03} is the pod's completion index.
                    names = ([base.format(index=i) for i in range(n_pods)]
                             if "{index" in base else [base])
                    check(secret in generated and all(x in generated[secret] for x in names),
                          "%s: --%s=%s is a key of a generated secret" % (where, flag, args[flag]))
            if binary == "layerfl-coordinator":
                port = args.get("listen", "0.0.0.0:50051").rsplit(":", 1)[1]
                named = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
                check(str(named.get("grpc")) == port, "%s: port grpc is --listen's %s" % (where, port))
                run_dir = ((cfg.get("federated") or {}).get("run_dir", "runs/demo"))
                state = mounted(os.path.normpath(os.path.join(workdir, run_dir)))
                check(state is not None and state["name"] in claims and not state.get("readOnly"),
                      "%s: federated.run_dir is on its persistent volume" % where)
                check(mounted(data_dir) is not None, "%s: the test set is mounted at %s"
                      % (where, data_dir))
                for svc in services_k8s.values():
                    sel = svc["spec"].get("selector", {})
                    if all(labels.get(k) == v for k, v in sel.items()):
                        sp = svc["spec"]["ports"][0]
                        check(sp.get("targetPort") == "grpc", "Service %s targets port grpc"
                              % svc["metadata"]["name"])
                        coordinator_target = "%s:%s" % (svc["metadata"]["name"], sp["port"])
                        check(spec.get("serviceName") == svc["metadata"]["name"],
                              "%s: serviceName is the Service %s" % (name, svc["metadata"]["name"]))
                check(spec.get("replicas") == 1, "%s: one coordinator" % name)
            elif binary == "layerfl-partition":
                check(args.get("clients") == "$JOB_COMPLETION_INDEX",
                      "%s: writes the share of the pod's completion index" % where)
                check(mounted(data_dir) is not None, "%s: the dataset is mounted at %s"
                      % (where, data_dir))
            elif binary == "layerfl-client":
                client_job = (d, args, cfg)
                m = mounted(args.get("data_dir", ""))
                check(m is not None and m.get("readOnly"),
                      "%s: --data_dir is a read-only volume" % where)
                check(mounted(data_dir) is None, "%s does not see the whole dataset" % where)
                check(args.get("id") == "client-{index:03}",
                      "%s: the id is client-<completion index, 3 digits>, as "
                      "layerfl-partition names the shares: %s" % (where, args.get("id")))
                k8s_cert_name = args.get("tls_server_name")
if client_job:
    d, args, cfg = client_job
    check(coordinator_target is not None and args.get("coordinator") == coordinator_target,
          "the clients dial the coordinator Service: %s (Service %s)"
          % (args.get("coordinator"), coordinator_target))
    check("DNS:%s," % k8s_cert_name in san + ",",
          "the clients check the coordinator certificate's name %s (%s)" % (k8s_cert_name, san))
    n = (cfg.get("data") or {}).get("num_clients")
    check(d["spec"].get("completionMode") == "Indexed" and d["spec"].get("completions") == n
          and d["spec"].get("parallelism") == n,
          "the client Job runs data.num_clients (%s) indexed pods" % n)
    script = d["spec"]["template"]["spec"]["containers"][0]["command"][-1]
    check("JOB_COMPLETION_INDEX" in script, "client pods take their partition from the index")
check(coordinator_target is not None, "a Service selects the coordinator")


def pod_commands(container, index):
    """What each command line of `container`'s `sh -c` script is, as the
    shell expands it in pod `index` (JOB_COMPLETION_INDEX): every binary is
    replaced by printf, so the shell itself does the arithmetic."""
    script = container["command"][-1]
    out = []
    for part in re.split(r"&&|;", script):
        words = shlex.split(part)
        if words and words[0] == "exec":
            words = words[1:]
        if not words:
            continue
        r = subprocess.run(["sh", "-c", "printf '%s\\n' " + part.strip().replace("exec ", "", 1)
                            .split(None, 1)[1]],
                           capture_output=True, text=True,
                           env={"JOB_COMPLETION_INDEX": str(index), "PATH": os.environ["PATH"]})
        out.append([words[0]] + r.stdout.splitlines())
    return out


# Worker Jobs (several clients per pod, --ids over the pod's own shares):
# suspended (k8s/clients.yaml runs the same ids), Indexed, and across their
# pods every client of the run exactly once, each pod's init container
# writing exactly its clients' shares into the volume the worker reads.
for d in worker_jobs:
    name = "Job/%s" % d["metadata"]["name"]
    spec = d["spec"]
    pod = spec["template"]["spec"]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    check(spec.get("suspend") is True, "%s is created suspended (clients.yaml runs the same ids)" % name)
    n_pods = spec.get("completions")
    check(spec.get("completionMode") == "Indexed" and n_pods and spec.get("parallelism") == n_pods,
          "%s: an Indexed Job of %s pods" % (name, n_pods))
    hosted, cfg = [], {}
    for w in range(n_pods or 0):
        written, ids = None, None
        for c in pod.get("initContainers", []) + pod.get("containers", []):
            where = "%s pod %d container %s" % (name, w, c["name"])
            check(c.get("image") in images, "%s runs the compose file's image" % where, quiet=True)
            mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
            for words in pod_commands(c, w):
                binary = words[0]
                check(binary in installed, "%s: %s is installed" % (where, binary), quiet=True)
                args = flag_args(binary, words, where)
                config = args.get("config")
                if config:
                    cfg = yaml.safe_load(open(image_path_to_repo(config))) or {}
                data_dir = (cfg.get("data") or {}).get("dir", DATA_DIR_DEFAULT)
                if binary == "layerfl-partition":
                    written = {int(x) for x in args.get("clients", "").split(",") if x}
                    out = args.get("out")
                    check(out in mounts and not mounts[out].get("readOnly"),
                          "%s: --out is the pod's writable data volume" % where, quiet=True)
                    written_volume = mounts.get(out, {}).get("name")
                elif binary == "layerfl-client":
                    r = args.get("ids", "")
                    m = re.fullmatch(r"client-(\d{3})\.\.client-(\d{3})", r)
                    ids = set(range(int(m.group(1)), int(m.group(2)) + 1)) if m else set()
                    root = args.get("data_root")
                    check(root in mounts and mounts[root].get("readOnly")
                          and mounts[root]["name"] == written_volume,
                          "%s: --data_root is the shares' volume, read-only" % where)
                    check(not any(mp == data_dir or data_dir.startswith(mp + "/") for mp in mounts),
                          "%s does not see the whole dataset" % where)
                    check(coordinator_target is not None and args.get("coordinator") == coordinator_target,
                          "%s dials the coordinator Service" % where, quiet=True)
                    check(args.get("tls_server_name") == k8s_cert_name,
                          "%s checks the coordinator certificate's name" % where, quiet=True)
                    # Its own identity: a certificate naming every id it
                    # hosts, and those ids' tokens.
                    for flag in ("tokens_file", "tls_cert", "tls_key", "tls_ca"):
                        mp = [p for p in mounts if args.get(flag, "").startswith(p + "/")]
                        secret = ((volumes.get(mounts[mp[0]]["name"], {}).get("secret") or {})
                                  .get("secretName") if mp else None)
                        check(secret in generated and
                              os.path.basename(args.get(flag, "")) in generated[secret],
                              "%s: --%s=%s is a key of a generated secret"
                              % (where, flag, args.get(flag)))
                    cert = os.path.join(certs_dir, os.path.basename(args.get("tls_cert", "")))
                    r = run(["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", cert])
                    check(all("DNS:client-%03d" % i in r.stdout for i in ids),
                          "%s: its certificate names the ids it hosts: %s" % (where, r.stdout.strip()))
                    tokens = os.path.join(secrets_dir, os.path.basename(args.get("tokens_file", "")))
                    listed = ({l.split()[0] for l in open(tokens) if l.strip()}
                              if os.path.isfile(tokens) else set())
                    check(listed == {"client-%03d" % i for i in ids},
                          "%s: its tokens file holds exactly its ids' tokens" % where)
        check(written is not None and written == ids and ids,
              "%s pod %d: its init container writes exactly its clients' shares (%s vs ids %s)"
              % (name, w, sorted(written or []), sorted(ids or [])))
        hosted.extend(sorted(ids or []))
    n = (cfg.get("data") or {}).get("num_clients")
    check(hosted == list(range(n or 0)),
          "%s: its pods host every client of the run exactly once (%d of data.num_clients %s)"
          % (name, len(hosted), n))

shutil.rmtree(tmp, ignore_errors=True)
print("%d of %d checks failed" % (len(failures), len(failures) + passed) if failures
      else "all %d deploy checks passed" % passed)
sys.exit(1 if failures else 0)

// layerfl-client --coordinator HOST:PORT (--id ID --data_dir DIR |
// --partition I | --partitions A..B | --ids ID..ID --data_root DIR)
// [--config FILE [--config_mode check|run|local]]:
// one client daemon of a federated run, or a worker hosting many (see
// client.h); the run's config
// comes from the coordinator. Exit codes: 0 the run finished (or
// SIGINT/SIGTERM: the client left cleanly), 1 runtime failure (coordinator
// unreachable past --give_up_s, join refused, local training failed), 2 bad
// config or flags, or a --config that is not the run's.

#include <atomic>
#include <iostream>
#include <memory>
#include <tuple>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/daemon/client.h"
#include "common/data/file.h"
#include "common/util/flags.h"
#include "common/util/memory.h"
#include "common/util/secret.h"
#include "common/util/signals.h"

ABSL_FLAG(std::string, config, "",
          "this machine's config (YAML); optional: the run's config comes "
          "from the coordinator (see --config_mode)");
ABSL_FLAG(std::string, config_mode, "check",
          "with --config: 'check' refuses to start when a field that "
          "defines the run differs from the coordinator's (naming it); "
          "'run' runs the coordinator's config and takes only the "
          "machine-local fields (threads, paths, profile) from --config; "
          "'local' runs --config as it is without asking");
ABSL_FLAG(int, threads, 0,
          "LibTorch intra-op threads on this machine (0: the config's)");
ABSL_FLAG(std::string, dataset_dir, "",
          "with --partition: where the run's full dataset lives on this "
          "machine (default the config's data.dir)");
ABSL_FLAG(std::string, hf_dir, "",
          "model.kind hf: the checkpoint directory on this machine (its "
          "config.json and tokenizer files; the weights come from the "
          "coordinator)");
ABSL_FLAG(
    std::string, data_dir, "",
    "this client's own training data: a directory with train-images-idx3-ubyte "
    "and train-labels-idx1-ubyte (plain or .gz) for image runs, or train.tsv "
    "and "
    "the run's vocab.txt for text runs (layerfl-partition writes them); needs "
    "--id");
ABSL_FLAG(
    int, partition, -1,
    "instead of --data_dir: build partition I of the config's dataset (as "
    "layerfl-sim does)");
ABSL_FLAG(
    std::string, id, "",
    "client id (default client-%03d of --partition; required with --data_dir)");
ABSL_FLAG(std::string, partitions, "",
          "a worker hosting many clients: partitions FIRST..LAST of the "
          "config's dataset, each its own client (client-%03d), training in "
          "turn on one model replica");
ABSL_FLAG(std::string, ids, "",
          "a worker hosting many clients with their own data: ids like "
          "client-000..client-099, each reading --data_root/<id>");
ABSL_FLAG(std::string, data_root, "",
          "with --ids: the directory holding each client's data directory");
ABSL_FLAG(std::string, coordinator, "127.0.0.1:50051", "coordinator address");
ABSL_FLAG(std::string, token, "",
          "the run's shared secret (prefer --token_file)");
ABSL_FLAG(std::string, token_file, "",
          "file holding the run's shared secret, or this client's own token "
          "when the coordinator has --tokens_file");
ABSL_FLAG(std::string, identity_key, "",
          "secure aggregation: file holding this client's Ed25519 identity "
          "seed (64 hex digits); its adverts are signed and every peer's are "
          "checked against --peer_identities (needs --id)");
ABSL_FLAG(std::string, peer_identities, "",
          "secure aggregation: the run's identity public keys, one "
          "'client_id hex_key' a line, as the operator distributes them "
          "(never from the coordinator); with --identity_key");
ABSL_FLAG(bool, require_secure_aggregation, false,
          "refuse (exit 2) a run that does not aggregate securely: the "
          "coordinator's config cannot turn this client's updates plain "
          "(implied by --identity_key)");
ABSL_FLAG(std::string, tokens_file, "",
          "per-client tokens, one 'client_id token' per line (# comments): "
          "each client this process runs presents its own id's (for --ids / "
          "--partitions workers when the coordinator has --tokens_file); "
          "exclusive with --token/--token_file");
ABSL_FLAG(std::string, tls_ca, "",
          "CA certificates (PEM) to verify the coordinator with; set = TLS");
ABSL_FLAG(std::string, tls_cert, "",
          "client certificate chain (PEM) for mutual TLS (needs --tls_ca)");
ABSL_FLAG(std::string, tls_key, "", "client private key (PEM) for mutual TLS");
ABSL_FLAG(std::string, tls_server_name, "",
          "name the coordinator's certificate must carry (default the host "
          "of --coordinator)");
ABSL_FLAG(double, budget, 0,
          "declared training budget in the run's cost unit (0: the "
          "coordinator assigns one)");
ABSL_FLAG(bool, budget_from_cgroup, true,
          "with no --budget_mb, declare the memory this client can train in "
          "from its cgroup's memory limit (a container's mem_limit): 3/4 of "
          "what the limit leaves beside the daemon's resident memory");
ABSL_FLAG(double, budget_s, 0,
          "seconds of compute per round this client gives, by this machine's "
          "measured profile: the budget when budget.unit is time, else a cap");
ABSL_FLAG(
    double, budget_mb, 0,
    "MiB of peak training memory this client has, by this machine's "
    "measured profile: the budget when budget.unit is memory, else a cap");
ABSL_FLAG(bool, print_profile, false,
          "measure this machine's training profile for the run (seconds per "
          "step and peak bytes per layer group, cached in profile.cache_dir), "
          "print it and exit without connecting");
ABSL_FLAG(int64_t, poll_ms, 5000, "GetTask long-poll wait, ms");
ABSL_FLAG(std::string, metrics_listen, "",
          "host:port to serve this daemon's Prometheus /metrics on (e.g. "
          "127.0.0.1:9465; port 0 picks one); '' = none");
ABSL_FLAG(std::string, metrics_port_file, "",
          "when set, the metrics listener's port is written there");
ABSL_FLAG(std::string, http_token_file, "",
          "file holding the metrics listener's token (Authorization: Bearer "
          "<token> or ?token=)");
ABSL_FLAG(int64_t, fault_exit_after_upload, 0,
          "fault injection (tests): stop dead, as if killed, right after the "
          "update of this round was accepted; 0 = never");
ABSL_FLAG(int64_t, fault_exit_after_shares, 0,
          "fault injection (tests): stop dead, as if killed, right after the "
          "key shares of this round were accepted (secure aggregation); 0 = "
          "never");
ABSL_FLAG(int64_t, delay_upload_ms, 0,
          "wait this long after training, before each upload, as a slow "
          "device or link would (tests and trials); 0 = none");
ABSL_FLAG(double, rpc_timeout_s, 30, "deadline of unary calls");
ABSL_FLAG(double, min_download_mib_s, 1,
          "a download may take --rpc_timeout_s plus its bytes at this rate "
          "(MiB/s), and ends after --rpc_timeout_s without progress");
ABSL_FLAG(std::string, download_cache_dir, "",
          "keep downloaded layers here as they arrive, so that a restarted "
          "client resumes a download from the last complete layer (a worker: "
          "one subdirectory per hosted id)");
ABSL_FLAG(int64_t, fault_exit_after_download_layers, 0,
          "fault injection: end the process at once after N downloaded "
          "layers are cached (needs --download_cache_dir); 0 = never");
ABSL_FLAG(int64_t, chunk_kb, 1024, "upload chunk payload, KiB");
ABSL_FLAG(int64_t, backoff_initial_ms, 200, "first reconnect delay, ms");
ABSL_FLAG(int64_t, backoff_max_ms, 5000, "largest reconnect delay, ms");
ABSL_FLAG(double, give_up_s, 120,
          "exit (code 1) after this long without reaching the coordinator");

namespace {

std::atomic<bool> g_stop{false};

}  // namespace

int main(int argc, char** argv) {
  // First: SIGINT/SIGTERM are blocked in every thread started after this
  // (gRPC's, OpenMP's); one started before would take a SIGTERM and die of it.
  absl::StatusOr<std::unique_ptr<layerfl::SignalWatcher>> signals =
      layerfl::SignalWatcher::Start([](int) { g_stop.store(true); });
  if (!signals.ok()) {
    std::cerr << "layerfl-client: " << signals.status().message() << "\n";
    return 1;
  }

  layerfl::RetainFreedMemory();
  layerfl::ParseFlags(
      argc, argv,
      "layerfl-client --coordinator HOST:PORT (--id ID --data_dir DIR | "
      "--partition I | --partitions A..B | --ids ID..ID --data_root DIR) "
      "[--config FILE] [flags]");
  auto fail_flags = [](const std::string& why) {
    std::cerr << "layerfl-client: " << why << "\n";
    return 2;
  };
  const bool own_data = !absl::GetFlag(FLAGS_data_dir).empty();
  layerfl::HostedClients hosted;
  const bool hosting = !absl::GetFlag(FLAGS_partitions).empty() ||
                       !absl::GetFlag(FLAGS_ids).empty();
  if (hosting) {
    if (own_data || absl::GetFlag(FLAGS_partition) >= 0 ||
        !absl::GetFlag(FLAGS_id).empty() ||
        absl::GetFlag(FLAGS_print_profile) ||
        (!absl::GetFlag(FLAGS_partitions).empty() &&
         !absl::GetFlag(FLAGS_ids).empty())) {
      return fail_flags(
          "--partitions or --ids (a worker of many clients) goes without "
          "--partition, --data_dir, --id, --print_profile and the other one");
    }
    if (!absl::GetFlag(FLAGS_partitions).empty()) {
      absl::StatusOr<std::pair<int, int>> range =
          layerfl::ParsePartitionRange(absl::GetFlag(FLAGS_partitions));
      if (!range.ok()) return fail_flags(std::string(range.status().message()));
      hosted.first_partition = range->first;
      hosted.last_partition = range->second;
    } else {
      absl::StatusOr<std::vector<std::string>> ids =
          layerfl::ParseIdRange(absl::GetFlag(FLAGS_ids));
      if (!ids.ok()) return fail_flags(std::string(ids.status().message()));
      if (absl::GetFlag(FLAGS_data_root).empty()) {
        return fail_flags("--ids needs --data_root");
      }
      hosted.ids = *std::move(ids);
      hosted.data_root = absl::GetFlag(FLAGS_data_root);
    }
  } else if (own_data == (absl::GetFlag(FLAGS_partition) >= 0)) {
    return fail_flags(own_data ? "--data_dir or --partition, not both"
                               : "--partition or --data_dir is required");
  }
  if (!absl::GetFlag(FLAGS_data_root).empty() && hosted.ids.empty()) {
    return fail_flags("--data_root goes with --ids");
  }
  if (own_data && absl::GetFlag(FLAGS_id).empty()) {
    return fail_flags(
        "--data_dir needs --id (the client id the coordinator knows)");
  }
  layerfl::ClientOptions options;
  if (!absl::GetFlag(FLAGS_config).empty()) {
    absl::StatusOr<layerfl::RunConfig> config =
        layerfl::LoadRunConfig(absl::GetFlag(FLAGS_config));
    if (!config.ok()) return fail_flags(std::string(config.status().message()));
    options.local_config = *std::move(config);
    const std::string mode = absl::GetFlag(FLAGS_config_mode);
    if (mode == "check") {
      options.config_source = layerfl::ConfigSource::kCheck;
    } else if (mode == "run") {
      options.config_source = layerfl::ConfigSource::kRun;
    } else if (mode == "local") {
      options.config_source = layerfl::ConfigSource::kLocal;
    } else {
      return fail_flags(absl::StrCat(
          "--config_mode: must be check, run or local, got '", mode, "'"));
    }
    // Measuring a profile asks nobody: the file says what is measured.
    if (absl::GetFlag(FLAGS_print_profile))
      options.config_source = layerfl::ConfigSource::kLocal;
  }
  if (absl::GetFlag(FLAGS_threads) < 0)
    return fail_flags("--threads: must be >= 0");
  options.threads = absl::GetFlag(FLAGS_threads);
  options.http.address = absl::GetFlag(FLAGS_metrics_listen);
  options.http_port_file = absl::GetFlag(FLAGS_metrics_port_file);
  if (!absl::GetFlag(FLAGS_http_token_file).empty()) {
    absl::StatusOr<std::string> token = layerfl::ReadFlagFileLine(
        "http_token_file", absl::GetFlag(FLAGS_http_token_file));
    if (!token.ok()) return fail_flags(std::string(token.status().message()));
    options.http.token = *std::move(token);
  }
  options.dataset_dir = absl::GetFlag(FLAGS_dataset_dir);
  options.hf_dir = absl::GetFlag(FLAGS_hf_dir);
  options.data_dir = absl::GetFlag(FLAGS_data_dir);
  options.partition = own_data || hosting ? 0 : absl::GetFlag(FLAGS_partition);
  layerfl::DaemonOptions& d = options.daemon;
  d.client_id = absl::GetFlag(FLAGS_id);
  d.token = absl::GetFlag(FLAGS_token);
  if (!absl::GetFlag(FLAGS_token_file).empty()) {
    absl::StatusOr<std::string> token = layerfl::ReadFlagFileLine(
        "token_file", absl::GetFlag(FLAGS_token_file));
    if (!token.ok()) return fail_flags(std::string(token.status().message()));
    d.token = *std::move(token);
  }
  if (!absl::GetFlag(FLAGS_tokens_file).empty()) {
    if (!d.token.empty()) {
      return fail_flags("--tokens_file and --token/--token_file are exclusive");
    }
    absl::StatusOr<std::map<std::string, std::string>> tokens =
        layerfl::ReadClientTokensFile("tokens_file", absl::GetFlag(FLAGS_tokens_file));
    if (!tokens.ok()) return fail_flags(std::string(tokens.status().message()));
    options.client_tokens = *std::move(tokens);
  }
  if (absl::GetFlag(FLAGS_identity_key).empty() !=
      absl::GetFlag(FLAGS_peer_identities).empty()) {
    return fail_flags("--identity_key and --peer_identities go together");
  }
  if (!absl::GetFlag(FLAGS_identity_key).empty()) {
    if (d.client_id.empty()) return fail_flags("--identity_key needs --id");
    absl::StatusOr<std::string> key =
        layerfl::ReadFlagFile("identity_key", absl::GetFlag(FLAGS_identity_key));
    if (!key.ok()) return fail_flags(std::string(key.status().message()));
    absl::StatusOr<std::string> peers = layerfl::ReadFlagFile(
        "peer_identities", absl::GetFlag(FLAGS_peer_identities));
    if (!peers.ok()) return fail_flags(std::string(peers.status().message()));
    absl::StatusOr<layerfl::SecAggIdentity> identity =
        layerfl::ParseSecAggIdentity(d.client_id, *key, "--identity_key", *peers,
                                     "--peer_identities");
    if (!identity.ok()) return fail_flags(std::string(identity.status().message()));
    d.secagg_identity =
        std::make_shared<const layerfl::SecAggIdentity>(*std::move(identity));
    d.require_secure_aggregation = true;
  }
  if (absl::GetFlag(FLAGS_require_secure_aggregation)) {
    d.require_secure_aggregation = true;
  }
  options.budget = absl::GetFlag(FLAGS_budget);
  options.budget_s = absl::GetFlag(FLAGS_budget_s);
  options.budget_mb = absl::GetFlag(FLAGS_budget_mb);
  options.budget_from_cgroup = absl::GetFlag(FLAGS_budget_from_cgroup);
  absl::StatusOr<layerfl::CgroupLimits> device = layerfl::ReadCgroupLimits();
  if (!device.ok()) return fail_flags(std::string(device.status().message()));
  options.device = *device;
  if (device->memory_bytes.has_value()) {
    // Memory the allocator keeps for reuse counts against the limit too.
    layerfl::RetainFreedMemory(*device->memory_bytes / 8);
  }
  d.poll = absl::Milliseconds(absl::GetFlag(FLAGS_poll_ms));
  d.backoff_initial =
      absl::Milliseconds(absl::GetFlag(FLAGS_backoff_initial_ms));
  d.backoff_max = absl::Milliseconds(absl::GetFlag(FLAGS_backoff_max_ms));
  d.give_up = absl::Seconds(absl::GetFlag(FLAGS_give_up_s));
  d.exit_after_upload_round = absl::GetFlag(FLAGS_fault_exit_after_upload);
  d.exit_after_shares_round = absl::GetFlag(FLAGS_fault_exit_after_shares);
  d.delay_upload = absl::Milliseconds(absl::GetFlag(FLAGS_delay_upload_ms));
  d.log = &std::cerr;
  options.link.target = absl::GetFlag(FLAGS_coordinator);
  if (absl::GetFlag(FLAGS_print_profile)) options.print_profile = &std::cout;
  options.link.rpc_timeout = absl::Seconds(absl::GetFlag(FLAGS_rpc_timeout_s));
  options.link.min_download_bytes_per_s =
      absl::GetFlag(FLAGS_min_download_mib_s) * (1 << 20);
  options.download_cache_dir = absl::GetFlag(FLAGS_download_cache_dir);
  options.exit_after_download_layers =
      absl::GetFlag(FLAGS_fault_exit_after_download_layers);
  if (options.exit_after_download_layers > 0 &&
      options.download_cache_dir.empty()) {
    return fail_flags(
        "--fault_exit_after_download_layers needs --download_cache_dir");
  }
  options.link.chunk_bytes = absl::GetFlag(FLAGS_chunk_kb) * 1024;
  options.link.reconnect_backoff_max = d.backoff_max;
  layerfl::ClientTls& tls = options.link.tls;
  for (const auto& [flag, path, pem] :
       {std::tuple<const char*, std::string, std::string*>{
            "tls_ca", absl::GetFlag(FLAGS_tls_ca), &tls.ca_pem},
        {"tls_cert", absl::GetFlag(FLAGS_tls_cert), &tls.cert_pem},
        {"tls_key", absl::GetFlag(FLAGS_tls_key), &tls.key_pem}}) {
    if (path.empty()) continue;
    absl::StatusOr<std::string> text = layerfl::ReadFlagFile(flag, path);
    if (!text.ok()) return fail_flags(std::string(text.status().message()));
    *pem = *std::move(text);
  }
  tls.server_name = absl::GetFlag(FLAGS_tls_server_name);
  tls.enabled = !tls.ca_pem.empty();
  if (tls.cert_pem.empty() != tls.key_pem.empty()) {
    return fail_flags("--tls_cert and --tls_key go together");
  }
  if (!tls.enabled && (!tls.cert_pem.empty() || !tls.server_name.empty())) {
    return fail_flags(
        "--tls_cert, --tls_key and --tls_server_name need --tls_ca");
  }
  if (d.poll <= absl::ZeroDuration() ||
      options.link.rpc_timeout <= absl::ZeroDuration() ||
      !(options.link.min_download_bytes_per_s > 0) ||
      d.backoff_initial <= absl::ZeroDuration() ||
      d.backoff_max < d.backoff_initial || d.give_up <= absl::ZeroDuration()) {
    return fail_flags(
        "--poll_ms, --rpc_timeout_s, --min_download_mib_s, "
        "--give_up_s and the backoff must be > 0 (max >= initial)");
  }
  if (options.link.chunk_bytes < 4 || options.link.chunk_bytes > (3 << 20)) {
    return fail_flags("--chunk_kb: must be in [1, 3072]");
  }

  absl::Status status =
      hosting ? layerfl::RunHostedClients(options, hosted, &g_stop)
              : layerfl::RunClient(options, &g_stop);
  if (status.ok()) return 0;
  if (g_stop.load() && status.code() == absl::StatusCode::kCancelled) return 0;
  std::cerr << "layerfl-client: " << status.message() << "\n";
  if (absl::StartsWith(status.message(), layerfl::kNotTheRunsConfig)) {
    std::cerr << "layerfl-client: run without --config (or with "
                 "--config_mode=run) to run the coordinator's config\n";
  }
  return status.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

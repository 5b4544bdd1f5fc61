// layerfl-coordinator --config FILE [--listen HOST:PORT] [flags]:
// serves a federated run to client daemons (see coordinator.h). Exit codes:
// 0 the run finished (or was stopped by SIGINT/SIGTERM after its last
// committed round), 1 runtime failure, 2 bad config or flags.
#include <signal.h>

#include <atomic>
#include <iostream>
#include <memory>
#include <tuple>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/data/file.h"
#include "common/util/flags.h"
#include "common/util/memory.h"
#include "common/util/secret.h"
#include "common/util/signals.h"
#include "server/service/coordinator.h"

ABSL_FLAG(std::string, config, "", "run config (YAML); required");
ABSL_FLAG(std::string, listen, "0.0.0.0:50051",
          "address to serve on; port 0 picks a free port");
ABSL_FLAG(std::string, port_file, "",
          "write the port actually listened on to this file");
ABSL_FLAG(std::string, token, "",
          "shared secret clients must present to join (prefer --token_file)");
ABSL_FLAG(std::string, token_file, "", "file holding the shared secret");
ABSL_FLAG(std::string, tokens_file, "",
          "per-client secrets: one 'client_id token' per line, # comments; "
          "a client must present its own id's token (exclusive with "
          "--token/--token_file)");
ABSL_FLAG(std::string, tls_cert, "",
          "server certificate chain (PEM); with --tls_key serves TLS");
ABSL_FLAG(std::string, tls_key, "", "server private key (PEM)");
ABSL_FLAG(std::string, tls_client_ca, "",
          "CA certificates (PEM) client certificates must chain to; set = "
          "mutual TLS (clients without a valid certificate are refused)");
ABSL_FLAG(int64_t, tick_ms, 100, "deadline/round-start check period, ms");
ABSL_FLAG(bool, insecure, false,
          "serve beyond loopback without a token or mutual TLS (anyone who "
          "reaches the port can join); without it such a --listen is refused");
ABSL_FLAG(int64_t, max_upload_mb_in_flight, 1024,
          "cap on the MiB of uploads in memory at once (being received, or "
          "received and not yet aggregated or spilled); a client whose "
          "upload would pass it is told 'busy' and sends it again later");
ABSL_FLAG(bool, receive_to_disk, false,
          "write every upload's values to federated.run_dir/held as they "
          "arrive and aggregate them from there: the coordinator holds about "
          "a layer of each upload instead of the whole update");
ABSL_FLAG(int32_t, max_uploads_in_flight, 0,
          "cap on how many uploads are in memory at once (as "
          "--max_upload_mb_in_flight); 1 keeps one update in flight; 0 = no "
          "cap");
ABSL_FLAG(int64_t, grpc_memory_mb, 2048,
          "gRPC's memory quota: what the transport may hold (read buffers of "
          "messages still arriving, above all); beyond it it sheds load");
ABSL_FLAG(double, stream_timeout_s, 60,
          "an upload or download stream is cancelled after this many seconds "
          "plus one per MiB it carries");
ABSL_FLAG(std::string, metrics_listen, "127.0.0.1:9464",
          "host:port of the HTTP listener for operators: Prometheus /metrics, "
          "the dashboard at /, its state at /api/state (localhost only by "
          "default; port 0 picks one; '' = none)");
ABSL_FLAG(std::string, metrics_port_file, "",
          "when set, the HTTP listener's port is written there once it "
          "listens");
ABSL_FLAG(double, metrics_linger_s, 0,
          "after the run, keep the HTTP listener this many seconds (a last "
          "scrape sees the final numbers)");
ABSL_FLAG(std::string, http_token_file, "",
          "file holding the HTTP listener's token: every request must then "
          "carry it (Authorization: Bearer <token>, or ?token=)");
ABSL_FLAG(double, release_memory_s, 10,
          "return the heap's free pages to the kernel once this many "
          "seconds passed without a join, download or upload (after a "
          "burst); 0 = never");
ABSL_FLAG(int, malloc_arenas, 1,
          "glibc malloc arenas (M_ARENA_MAX); 1 keeps idle connected "
          "clients' RSS low and steady (10,000: 16.3-16.5 KB each, vs "
          "17.3-18.6 KB with glibc's default; bench/results/scale.txt); "
          "0 = glibc's default (8 per core)");
// The transport settings (encoding, chunk sizes, ordered aggregation, waits,
// timeouts) are part of the run: the config's `transport` section.

namespace {

std::atomic<bool> g_stop{false};

}  // namespace

int main(int argc, char** argv) {
  // First: SIGINT/SIGTERM are blocked in every thread started after this
  // (gRPC's, OpenMP's); one started before would take a SIGTERM and die of it.
  absl::StatusOr<std::unique_ptr<layerfl::SignalWatcher>> signals =
      layerfl::SignalWatcher::Start([](int sig) {
        std::cerr << "layerfl-coordinator: " << (sig == SIGINT ? "SIGINT" : "SIGTERM")
                  << ", stopping" << std::endl;
        g_stop.store(true);
      });
  if (!signals.ok()) {
    std::cerr << "layerfl-coordinator: " << signals.status().message() << "\n";
    return 1;
  }

  layerfl::ReturnFreedMemory();
  layerfl::ParseFlags(argc, argv,
                      "layerfl-coordinator --config FILE [--listen HOST:PORT] [flags]");
  // Before any thread starts (the gRPC server's, the ticker).
  if (const int arenas = absl::GetFlag(FLAGS_malloc_arenas); arenas > 0) {
    layerfl::LimitMallocArenas(arenas);
  }
  auto fail_flags = [](const std::string& why) {
    std::cerr << "layerfl-coordinator: " << why << "\n";
    return 2;
  };
  if (absl::GetFlag(FLAGS_config).empty()) return fail_flags("--config is required");
  absl::StatusOr<layerfl::RunConfig> config =
      layerfl::LoadRunConfig(absl::GetFlag(FLAGS_config));
  if (!config.ok()) return fail_flags(std::string(config.status().message()));

  layerfl::CoordinatorOptions options;
  options.listen = absl::GetFlag(FLAGS_listen);
  options.port_file = absl::GetFlag(FLAGS_port_file);
  options.http.address = absl::GetFlag(FLAGS_metrics_listen);
  options.http_port_file = absl::GetFlag(FLAGS_metrics_port_file);
  if (!(absl::GetFlag(FLAGS_metrics_linger_s) >= 0))
    return fail_flags("--metrics_linger_s: must be >= 0");
  options.http_linger = absl::Seconds(absl::GetFlag(FLAGS_metrics_linger_s));
  if (!absl::GetFlag(FLAGS_http_token_file).empty()) {
    absl::StatusOr<std::string> token = layerfl::ReadFlagFileLine(
        "http_token_file", absl::GetFlag(FLAGS_http_token_file));
    if (!token.ok()) return fail_flags(std::string(token.status().message()));
    options.http.token = *std::move(token);
  }
  if (!(absl::GetFlag(FLAGS_release_memory_s) >= 0))
    return fail_flags("--release_memory_s: must be >= 0");
  options.release_memory_every =
      absl::Seconds(absl::GetFlag(FLAGS_release_memory_s));
  options.log = &std::cerr;
  layerfl::ServiceOptions& s = options.service;
  s.token = absl::GetFlag(FLAGS_token);
  if (!absl::GetFlag(FLAGS_token_file).empty()) {
    absl::StatusOr<std::string> token =
        layerfl::ReadFlagFileLine("token_file", absl::GetFlag(FLAGS_token_file));
    if (!token.ok()) return fail_flags(std::string(token.status().message()));
    s.token = *std::move(token);
  }
  if (!absl::GetFlag(FLAGS_tokens_file).empty()) {
    if (!absl::GetFlag(FLAGS_token).empty() || !absl::GetFlag(FLAGS_token_file).empty()) {
      return fail_flags("--tokens_file and --token/--token_file are exclusive");
    }
    absl::StatusOr<std::map<std::string, std::string>> tokens =
        layerfl::ReadClientTokensFile("tokens_file", absl::GetFlag(FLAGS_tokens_file));
    if (!tokens.ok()) return fail_flags(std::string(tokens.status().message()));
    s.client_tokens = *std::move(tokens);
  }
  for (const auto& [flag, path, pem] :
       {std::tuple<const char*, std::string, std::string*>{
            "tls_cert", absl::GetFlag(FLAGS_tls_cert), &s.tls.cert_pem},
        {"tls_key", absl::GetFlag(FLAGS_tls_key), &s.tls.key_pem},
        {"tls_client_ca", absl::GetFlag(FLAGS_tls_client_ca), &s.tls.client_ca_pem}}) {
    if (path.empty()) continue;
    absl::StatusOr<std::string> text = layerfl::ReadFlagFile(flag, path);
    if (!text.ok()) return fail_flags(std::string(text.status().message()));
    *pem = *std::move(text);
  }
  if (s.tls.cert_pem.empty() != s.tls.key_pem.empty()) {
    return fail_flags("--tls_cert and --tls_key go together");
  }
  if (!s.tls.client_ca_pem.empty() && s.tls.cert_pem.empty()) {
    return fail_flags("--tls_client_ca (mutual TLS) needs --tls_cert and --tls_key");
  }
  s.tick = absl::Milliseconds(absl::GetFlag(FLAGS_tick_ms));
  s.insecure = absl::GetFlag(FLAGS_insecure);
  s.grpc_memory_bytes = absl::GetFlag(FLAGS_grpc_memory_mb) << 20;
  s.max_upload_bytes_in_flight = absl::GetFlag(FLAGS_max_upload_mb_in_flight) << 20;
  s.max_uploads_in_flight = absl::GetFlag(FLAGS_max_uploads_in_flight);
  s.receive_to_disk = absl::GetFlag(FLAGS_receive_to_disk);
  if (!(absl::GetFlag(FLAGS_stream_timeout_s) > 0))
    return fail_flags("--stream_timeout_s: must be > 0");
  s.stream_timeout = absl::Seconds(absl::GetFlag(FLAGS_stream_timeout_s));
  if (absl::Status safe = layerfl::CheckListenSecurity(options.listen, s); !safe.ok()) {
    return fail_flags(absl::StrCat("--", safe.message()));
  }
  {
    absl::StatusOr<layerfl::ServiceOptions> check = layerfl::TransportOptions(*config, s);
    if (!check.ok()) return fail_flags(std::string(check.status().message()));
    check->run_id = "x";
    absl::Status valid = check->Validate();
    if (!valid.ok()) return fail_flags(absl::StrCat("--", valid.message()));
  }

  absl::Status status = layerfl::RunCoordinator(*config, options, &g_stop);
  if (status.ok()) return 0;
  if (g_stop.load() && status.code() == absl::StatusCode::kCancelled) {
    std::cerr << "layerfl-coordinator: stopped; the last committed round is in "
              << config->federated.run_dir
              << "/checkpoints (federated.resume: true continues it)\n";
    return 0;
  }
  std::cerr << "layerfl-coordinator: " << status.message() << "\n";
  return status.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

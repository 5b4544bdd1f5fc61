// layerfl-loadgen: N synthetic clients against a coordinator (loadgen.h).
// Exits 0 once the run is finished and every client ended as it was asked
// to (finished, or failed/dropped when told to), printing a summary line;
// 1 when some client met anything else; 2 on bad flags.
#include <iostream>

#include "absl/flags/flag.h"
#include "client/loadgen/loadgen.h"
#include "common/data/file.h"
#include "common/util/flags.h"

ABSL_FLAG(std::string, coordinator, "", "coordinator host:port; required");
ABSL_FLAG(int, clients, 100, "synthetic clients to run, >= 1");
ABSL_FLAG(std::string, token_file, "", "file holding the run's shared secret");
ABSL_FLAG(std::string, id_prefix, "load-", "client ids are <prefix>NNNNN");
ABSL_FLAG(int, first_index, 0, "the first client id's number");
ABSL_FLAG(int64_t, poll_ms, 5000, "long-poll wait per task request, ms");
ABSL_FLAG(int64_t, num_samples, 100, "samples each client reports");
ABSL_FLAG(double, slow_fraction, 0, "fraction of clients that are slow");
ABSL_FLAG(int64_t, slow_ms, 1000, "a slow client's delay per task, ms");
ABSL_FLAG(double, fail_fraction, 0,
          "fraction whose work fails in --fail_round (they leave with it)");
ABSL_FLAG(int64_t, fail_round, 2, "the round failing clients fail in");
ABSL_FLAG(double, drop_fraction, 0,
          "fraction that stop dead after their upload of --drop_round");
ABSL_FLAG(int64_t, drop_round, 1, "the round dropping clients drop after");
ABSL_FLAG(uint64_t, seed, 1, "seed of the synthetic scores and updates");
ABSL_FLAG(double, ramp_s, 0,
          "start the clients evenly spread over this many seconds");
ABSL_FLAG(double, give_up_s, 120,
          "seconds a client retries an unreachable coordinator");
ABSL_FLAG(bool, own_connections, false,
          "each client on its own TCP connection, as separate devices "
          "(default: gRPC multiplexes them over one)");

int main(int argc, char** argv) {
  layerfl::ParseFlags(
      argc, argv,
      "layerfl-loadgen --coordinator HOST:PORT --clients N [--token_file F]");
  layerfl::LoadGenOptions o;
  o.target = absl::GetFlag(FLAGS_coordinator);
  o.clients = absl::GetFlag(FLAGS_clients);
  o.id_prefix = absl::GetFlag(FLAGS_id_prefix);
  o.first_index = absl::GetFlag(FLAGS_first_index);
  o.poll = absl::Milliseconds(absl::GetFlag(FLAGS_poll_ms));
  o.num_samples = absl::GetFlag(FLAGS_num_samples);
  o.slow_fraction = absl::GetFlag(FLAGS_slow_fraction);
  o.slow_delay = absl::Milliseconds(absl::GetFlag(FLAGS_slow_ms));
  o.fail_fraction = absl::GetFlag(FLAGS_fail_fraction);
  o.fail_round = absl::GetFlag(FLAGS_fail_round);
  o.drop_fraction = absl::GetFlag(FLAGS_drop_fraction);
  o.drop_round = absl::GetFlag(FLAGS_drop_round);
  o.seed = absl::GetFlag(FLAGS_seed);
  o.give_up = absl::Seconds(absl::GetFlag(FLAGS_give_up_s));
  o.ramp = absl::Seconds(absl::GetFlag(FLAGS_ramp_s));
  o.own_connections = absl::GetFlag(FLAGS_own_connections);
  if (const std::string file = absl::GetFlag(FLAGS_token_file); !file.empty()) {
    absl::StatusOr<std::string> token =
        layerfl::ReadFlagFileLine("token_file", file);
    if (!token.ok()) {
      std::cerr << token.status().message() << "\n";
      return 2;
    }
    o.token = *token;
  }
  absl::StatusOr<layerfl::LoadGenReport> report = layerfl::RunLoadGen(o);
  if (!report.ok()) {
    std::cerr << report.status().message() << "\n";
    return 2;
  }
  std::cout << report->Summary() << std::endl;
  return report->errors == 0 && report->finished > 0 ? 0 : 1;
}

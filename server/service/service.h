#ifndef LAYERFL_SERVER_SERVICE_SERVICE_H_
#define LAYERFL_SERVER_SERVICE_SERVICE_H_

// The coordinator's gRPC service: a thin adapter from proto/layerfl.proto to
// the transport-free RoundEngine (DESIGN.md §1, §3). Torch-free.
//
// Threads. RPCs run on gRPC's callback API. Reactor threads only check
// sessions, decode/encode chunks and queue work: every RoundEngine call (which
// may select layers, commit, evaluate and write a checkpoint) runs on one
// engine thread, in arrival order, and finishes its RPC from there. A ticker
// posts a tick every `tick`: session timeouts, round deadlines (engine Tick),
// starting rounds, and the end of the run.
//
// Sessions. Join checks the run's token and hands out a session; every later
// call names client id + session. An unknown session (the coordinator
// restarted, or the client timed out) is refused with UNAUTHENTICATED
// "unknown_session: ...", and the client joins again.
//
// Refusals carry a reason name first in the status message: the engine's
// (RejectReasonName: "stale_round", "duplicate", "not_assigned", ...), the
// codec's (WireErrorName: "bad_checksum", "truncated", ...), or the service's
// own: "bad_token", "unknown_session", "bad_request", "shutting_down",
// "spill_lost" (an update that waited on disk could not be read back; the
// client may send it again), "busy" (the bytes of uploads in flight are at
// their cap: back off and send again; UNAVAILABLE).
//
// Uploads are admitted at their first message, before any value is read or
// buffered: the session must be live, the client must hold a TRAIN task of
// that round, the stream must match the run's mode (a plain update in a
// secure run, or a masked one in a plain run, is refused "protocol"), a
// session has one upload stream at a time ("duplicate"), and the declared
// bytes must fit under max_upload_bytes_in_flight ("busy"). An upload counts
// there until its update has left memory (added to the sums, or written to
// disk to wait its turn), and an update read back from disk counts again
// while it is added. Every upload and
// download stream is cancelled when it runs past its deadline
// (stream_timeout plus a second per MiB it carries).
//
// Identity. Listening beyond loopback needs a token (per-client tokens
// recommended) or mutual TLS unless `insecure` (CheckListenSecurity). With
// mutual TLS the client id must be one of its certificate's names (SAN DNS
// names, or the CN when it has none): a certificate is one client. Client
// ids are 1-128 characters of [A-Za-z0-9._:-] (bad_request otherwise).
//
// Logs. Text from the network (ids, reasons) is quoted, escaped and cut;
// refusals are logged at most 5 per reason every 10 s, the rest counted.
//
// Ordered aggregation. The aggregator's float32 running sums depend on the
// order updates are added. With `ordered_aggregation` the engine thread adds a
// round's updates in client-id order -- the simulator's order -- holding an
// update that arrives early until every lower-id participant has answered or
// been dropped; at the round deadline everything held is added first. Same
// config and seed then give bit-identical weights to layerfl-sim. The cost:
// held updates wait (at most one per participant) until they are added: in
// memory up to max_held_bytes, then in files under spill_dir.

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/codec/codec.h"
#include "common/util/clock.h"
#include "common/util/secret.h"  // ParseClientTokens
#include "server/round/round_engine.h"

namespace layerfl {

// TLS for the coordinator's listening port, PEM contents (not paths).
struct ServerTls {
  // Server certificate chain and private key; both "" = no TLS (insecure,
  // the default), both set = TLS.
  std::string cert_pem;
  std::string key_pem;
  // When set (requires TLS): every client must present a certificate signed
  // by one of these CAs (mutual TLS); others fail the handshake.
  std::string client_ca_pem;
};

struct ServiceOptions {
  // Shared secret every Join must present; "" = none. Default "".
  std::string token;
  // Per-client secrets, client id -> token; when non-empty a Join must
  // present the token of its own id, and an unknown id is refused
  // ("bad_token"). Exclusive with `token`. Default empty.
  std::map<std::string, std::string> client_tokens;
  // Default: no TLS.
  ServerTls tls;
  // Encoding of downloads and uploads. Default float32.
  Encoding encoding = Encoding::kFloat32;
  // Payload bytes per FetchLayers chunk, in [4, 3 MiB]. Default 1 MiB.
  int64_t chunk_bytes = int64_t{1} << 20;
  // Largest upload chunk payload accepted, in [4, 3 MiB]. Default 2 MiB.
  int64_t max_chunk_bytes = int64_t{2} << 20;
  // Longest a GetTask long poll is held (and at most client_timeout / 2).
  // Default 10 s.
  absl::Duration max_poll = absl::Seconds(10);
  // A client not heard from for this long leaves the run. Default 60 s.
  absl::Duration client_timeout = absl::Seconds(60);
  // Heartbeat period told to clients. Default 5 s.
  absl::Duration heartbeat = absl::Seconds(5);
  // Ticker period. Default 100 ms.
  absl::Duration tick = absl::Milliseconds(100);
  // Add a round's updates in client-id order (see above). Default true.
  bool ordered_aggregation = true;
  // Ordered aggregation: once the updates waiting for their turn hold this
  // many value bytes, the next ones wait in files under `spill_dir` instead
  // of memory (read back when their turn comes). Default 1 GiB.
  int64_t max_held_bytes = int64_t{1} << 30;
  // Where spilled updates wait; "" = always in memory. Created at start,
  // leftovers of an earlier process removed. Default "".
  std::string spill_dir;
  // Every plain upload's values go to a file under spill_dir a layer at a
  // time as they arrive, and the engine folds them from there a tensor at a
  // time: the coordinator holds about a layer of each upload instead of the
  // whole update (a write and two reads of it through the page cache, the
  // reads under the engine's lock). Needs spill_dir. Default false.
  bool receive_to_disk = false;
  // The first round this process starts waits until this many clients have
  // joined, or `wait_for_clients_timeout` passed (then it starts with the
  // joined clients when they reach federated.min_clients). Default 1.
  int wait_for_clients = 1;
  absl::Duration wait_for_clients_timeout = absl::Seconds(60);
  // After the last round, keep answering FINISHED until every client has
  // been told or this long. Default 10 s.
  absl::Duration linger = absl::Seconds(10);
  // Identifies the run's weights: clients holding layers of another run_id
  // download everything. Required.
  std::string run_id;
  // The run's config as GetRunConfig sends it (ServedRunConfigYaml); "" =
  // this coordinator does not serve it (refused FAILED_PRECONDITION).
  // Default "".
  std::string run_config_yaml;
  // The run aggregates securely (privacy.secure_aggregation): plain uploads
  // are refused at their header, masked ones otherwise. Default false.
  bool secure_aggregation = false;
  // Cap on the value bytes of the uploads in memory at once (being received,
  // or received and not yet added or spilled; see above); a stream that
  // would pass it is refused "busy" at its header. Default 1 GiB.
  int64_t max_upload_bytes_in_flight = int64_t{1} << 30;
  // Cap on how many uploads are in memory at once (as above): 1 keeps one
  // update in flight. 0 = none (the default).
  int max_uploads_in_flight = 0;
  // gRPC's memory quota (ResourceQuota): what the transport may hold, e.g.
  // of messages not yet arrived whole. Default 2 GiB.
  int64_t grpc_memory_bytes = int64_t{2} << 30;
  // A stream (upload or download) is cancelled after stream_timeout plus
  // one second per MiB it carries. Default 60 s.
  absl::Duration stream_timeout = absl::Seconds(60);
  // Serve beyond loopback without a token or mutual TLS (anyone who reaches
  // the port can join). Default false.
  bool insecure = false;

  // InvalidArgument naming the field.
  absl::Status Validate() const;
};

struct ServiceDeps {
  RoundEngine* engine = nullptr;  // required, not owned
  Clock* clock = nullptr;         // required: the engine's clock
  // The budget of a joining client from its id and declared budget (0 =
  // none declared); an error refuses the join. Required. Called on the
  // engine thread.
  std::function<absl::StatusOr<double>(const std::string& id, double declared)>
      budget;
  // The run's budget.unit is time or memory: a client must send its
  // training profile at Join (refused bad_request otherwise).
  bool profiles_required = false;
  // The importance metric SCORE tasks ask for (ScoreMetricFor(config)).
  std::string metric = "sq_grad_norm";
  // Every committed round, bytes_down filled with the wire bytes FetchLayers
  // sent since the previous commit. Called on the engine thread; optional.
  std::function<void(const RoundRecord&)> on_round;
  // One line per event (join, leave, round start/commit, refusal,
  // timeout); null = silent. Not owned; written under a lock.
  std::ostream* log = nullptr;
};

// One FetchLayers or UploadUpdate stream, as measured.
struct TransferRecord {
  std::string client;
  int64_t round = 0;  // downloads: the model's committed round; uploads: the
                      // round the update is for
  std::vector<std::string> layers;
  int64_t wire_bytes = 0;     // messages + gRPC length prefixes
  int64_t payload_bytes = 0;  // encoded values only
  int64_t numel = 0;          // values carried
  std::string outcome;        // "ok", or the refusal's reason name
};

// A client with a live session, as the service sees it now.
struct ConnectedClient {
  std::string id;
  double budget = 0;  // the budget it was given at Join
  absl::Duration since_contact;  // since its last call
};

struct ServiceStats {
  // The newest transfers (at most 4096 of each kind).
  std::vector<TransferRecord> downloads;
  std::vector<TransferRecord> uploads;
  // Every transfer since start: bytes of the accepted ones, on the wire and
  // of encoded values.
  int64_t down_wire_bytes = 0, down_payload_bytes = 0;
  int64_t up_wire_bytes = 0, up_payload_bytes = 0;
  std::map<std::string, int64_t> refused;  // by reason name, all RPCs
  // Ordered aggregation: updates that waited on disk, the value bytes
  // waiting in memory now, and the most that waited at once.
  int64_t spilled = 0;
  int64_t held_bytes = 0;
  int64_t peak_held_bytes = 0;
  // Clients: connected now (by id), ever joined, dropped for silence, and
  // the Leaves that gave a reason, by its kind ("work_failed", ...).
  std::vector<ConnectedClient> clients;
  int64_t ever_joined = 0;
  int64_t timed_out = 0;
  std::map<std::string, int64_t> leave_reasons;
  // Task long polls the coordinator holds now (each is a gRPC call in
  // flight: most of an idle client's memory).
  int64_t polls_waiting = 0;
};

// OK when serving on `address` is safe with `options`: a loopback address
// (127.0.0.0/8, ::1, localhost, unix:), a token or per-client tokens,
// mutual TLS, or `insecure`. Otherwise InvalidArgument naming the fix.
absl::Status CheckListenSecurity(const std::string& address,
                                 const ServiceOptions& options);


class CoordinatorServer {
 public:
  // Listens on `address` ("host:port"; port 0 picks a free port, see port())
  // and starts serving and ticking.
  static absl::StatusOr<std::unique_ptr<CoordinatorServer>> Start(
      const std::string& address, const ServiceOptions& options,
      ServiceDeps deps);

  // Stops serving (as Shutdown) and waits for every thread.
  virtual ~CoordinatorServer() = default;

  virtual int port() const = 0;

  // Blocks until the run is over: OK once the engine finished and every
  // client was told (or `linger` passed); the engine's error when the run
  // failed; Cancelled after Shutdown.
  virtual absl::Status Wait() = 0;

  // Asks the server to stop; Wait returns. Thread-safe, non-blocking.
  virtual void Shutdown() = 0;

  virtual ServiceStats stats() const = 0;
};

}  // namespace layerfl

#endif  // LAYERFL_SERVER_SERVICE_SERVICE_H_

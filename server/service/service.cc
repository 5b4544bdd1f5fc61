#include "server/service/service.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "common/util/log_text.h"
#include "common/util/secret.h"
#include "common/util/status_macros.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/resource_quota.h"
#include "grpcpp/support/proto_buffer_reader.h"
#include "proto/layerfl.grpc.pb.h"
#include "proto/wire_convert.h"
#include "server/service/held_spill.h"
#include "server/service/held_uploads.h"
#include "server/service/long_polls.h"
#include "server/service/sessions.h"
#include "server/service/snapshot.h"
#include "server/service/streams.h"

namespace layerfl {
namespace {

namespace wire = ::layerfl::wire::v1;

constexpr int64_t kMaxChunkLimit = int64_t{3} << 20;
constexpr size_t kMaxTransferRecords = 4096;
constexpr const char* kServiceReasons[] = {
    "bad_token", "unknown_session", "bad_request", "shutting_down",
    "spill_lost", "busy"};
// What a Leave's reason ("<kind>: <detail>") is counted as; any other kind
// is "other" (the counter's labels stay a fixed set).
constexpr const char* kLeaveKinds[] = {"work_failed", "secagg_refused",
                                       "secagg_state_lost"};

// What an upload says of its client's device (UploadManifest and
// MaskedHeader): kept when positive, as the usage of the other fields.
template <typename Message>
void TakeDevice(const Message& m, ClientUsage& usage) {
  if (m.process_peak_bytes() > 0) {
    usage.process_peak_bytes = m.process_peak_bytes();
  }
  if (m.memory_limit_bytes() > 0) {
    usage.memory_limit_bytes = m.memory_limit_bytes();
  }
  if (m.cpus() > 0) usage.cpus = m.cpus();
}

absl::Status BadRequest(std::string detail) {
  return absl::InvalidArgumentError(absl::StrCat("bad_request: ", detail));
}
absl::Status UnknownSession(const std::string& id) {
  return absl::UnauthenticatedError(absl::StrCat(
      "unknown_session: client ", LogQuote(id),
      " has no live session here (coordinator restarted or client timed "
      "out); join again"));
}
absl::Status ShuttingDown() {
  return absl::UnavailableError("shutting_down: the coordinator is stopping");
}
absl::Status CheckClientId(const std::string& id) {
  if (IsValidClientId(id)) return absl::OkStatus();
  return BadRequest(absl::StrCat(
      "client_id ", LogQuote(id),
      " is not 1-128 characters of [A-Za-z0-9._:-] (not starting with '.')"));
}

std::string ReasonName(const absl::Status& s) {
  if (std::optional<RejectReason> r = ReasonOf(s)) {
    return std::string(RejectReasonName(*r));
  }
  if (std::optional<WireError> w = WireErrorOf(s)) {
    return std::string(WireErrorName(*w));
  }
  for (const char* name : kServiceReasons) {
    if (absl::StartsWith(s.message(), absl::StrCat(name, ":"))) return name;
  }
  return "other";
}

// Runs posted closures one at a time, in order, on its own thread. After
// Stop, closures still posted (a call the server shut down mid-way, whose
// reactor must still be finished) run on the poster's thread, still one at a
// time: dropping them would leave their calls unfinished and the server's
// Wait() blocked for good.
class SerialExecutor {
 public:
  SerialExecutor() : thread_([this] { Run(); }) {}
  ~SerialExecutor() { Stop(); }

  void Post(std::function<void()> fn) {
    {
      absl::MutexLock lock(&mu_);
      if (!stopped_) {
        queue_.push_back(std::move(fn));
        return;
      }
    }
    RunInline(fn);
  }

  // Runs what is queued, then joins the thread.
  void Stop() {
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
    }
    if (thread_.joinable()) thread_.join();
    std::deque<std::function<void()>> left;
    {
      absl::MutexLock lock(&mu_);
      stopped_ = true;
      left.swap(queue_);  // posted after the thread's last look
    }
    for (std::function<void()>& fn : left) RunInline(fn);
  }

 private:
  void Run() {
    for (;;) {
      std::function<void()> fn;
      {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(
            +[](SerialExecutor* e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(e->mu_) {
              return e->stopping_ || !e->queue_.empty();
            },
            this));
        if (queue_.empty()) return;
        fn = std::move(queue_.front());
        queue_.pop_front();
      }
      fn();
    }
  }

  // One closure at a time across posting threads; a closure that posts
  // another (a reactor finished inline) runs it at once.
  void RunInline(std::function<void()>& fn) {
    thread_local bool inside = false;
    if (inside) {
      fn();
      return;
    }
    absl::MutexLock lock(&inline_mu_);
    inside = true;
    fn();
    inside = false;
  }

  absl::Mutex mu_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;  // the thread is gone
  absl::Mutex inline_mu_;
  std::thread thread_;
};

struct Poll {
  grpc::CallbackServerContext* context;
  grpc::ServerUnaryReactor* reactor;
  wire::TaskReply* reply;
};

// FetchLayers is a raw method: it writes the snapshot's pre-serialized
// messages without copying them.
using CallbackBase = wire::Coordinator::WithRawCallbackMethod_FetchLayers<
    wire::Coordinator::CallbackService>;

class CoordinatorServerImpl final : public CoordinatorServer,
                                    public CallbackBase {
 public:
  CoordinatorServerImpl(const ServiceOptions& options, ServiceDeps deps)
      : options_(options),
        deps_(std::move(deps)),
        held_(options.max_held_bytes, options.spill_dir,
              [this](const std::string& line) { Log(line); }) {
    // A copy shares the engine's values (copy on write).
    ModelWeights global;
    deps_.engine->VisitGlobal([&](const ModelWeights& g) { global = g; });
    layouts_ = LayoutsOf(global);
    snapshot_.layers = EncodeSnapshot(global, nullptr, options_.encoding,
                                      options_.chunk_bytes);
    for (const LayerLayout& l : layouts_) layer_names_.push_back(l.layer);
    snapshot_.committed_round = deps_.engine->committed_round();
    started_at_ = deps_.clock->Now();
  }

  ~CoordinatorServerImpl() override { Stop(); }

  absl::Status Listen(const std::string& address) {
    grpc::ServerBuilder builder;
    std::shared_ptr<grpc::ServerCredentials> credentials =
        grpc::InsecureServerCredentials();
    if (!options_.tls.cert_pem.empty()) {
      grpc::SslServerCredentialsOptions ssl(
          options_.tls.client_ca_pem.empty()
              ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
              : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
      ssl.pem_root_certs = options_.tls.client_ca_pem;
      ssl.pem_key_cert_pairs.push_back(
          {options_.tls.key_pem, options_.tls.cert_pem});
      credentials = grpc::SslServerCredentials(ssl);
    }
    builder.AddListeningPort(address, credentials, &port_);
    builder.RegisterService(this);
    // What gRPC itself may hold in memory (read buffers of calls whose
    // message has not arrived whole, above all): beyond it, it sheds load
    // instead of growing.
    grpc::ResourceQuota quota("layerfl-coordinator");
    quota.Resize(static_cast<size_t>(options_.grpc_memory_bytes));
    builder.SetResourceQuota(quota);
    builder.SetMaxReceiveMessageSize(
        static_cast<int>(options_.max_chunk_bytes + (64 << 10)));
    server_ = builder.BuildAndStart();
    if (server_ == nullptr || port_ == 0) {
      return absl::UnavailableError(
          absl::StrCat("cannot listen on '", address, "'"));
    }
    if (options_.insecure && options_.token.empty() &&
        options_.client_tokens.empty() && options_.tls.client_ca_pem.empty()) {
      Log("--insecure: no token and no mutual TLS; anyone who reaches this "
          "port can join the run");
    }
    Log(absl::StrCat("listening on port ", port_,
                     options_.tls.cert_pem.empty()        ? " (insecure)"
                     : options_.tls.client_ca_pem.empty() ? " (TLS)"
                                                          : " (mutual TLS)",
                     ", run ", options_.run_id, ", ",
                     EncodingName(options_.encoding), ", chunks of ",
                     options_.chunk_bytes, " bytes, ",
                     options_.ordered_aggregation ? "ordered" : "arrival-order",
                     " aggregation"));
    ticker_ = std::thread([this] { TickerLoop(); });
    return absl::OkStatus();
  }

  int port() const override { return port_; }

  // Constant time in the token's bytes; an unknown id is compared against a
  // dummy so that it takes as long as a known one.
  bool TokenMatches(const std::string& id, const std::string& token) const {
    if (options_.client_tokens.empty()) {
      return SecretsEqual(token, options_.token);
    }
    auto it = options_.client_tokens.find(id);
    static const std::string kNoSuchClient(64, '\0');
    const bool known = it != options_.client_tokens.end();
    const bool equal = SecretsEqual(token, known ? it->second : kNoSuchClient);
    return known && equal;
  }

  // With mutual TLS a certificate is one client: the id must be one of its
  // names (grpc's peer identity: the SAN DNS names, or the CN without
  // them).
  absl::Status CheckPeerIdentity(grpc::CallbackServerContext* context,
                                 const std::string& id) const {
    if (options_.tls.client_ca_pem.empty()) return absl::OkStatus();
    std::shared_ptr<const grpc::AuthContext> auth = context->auth_context();
    std::vector<std::string> names;
    if (auth != nullptr) {
      for (const grpc::string_ref& name : auth->GetPeerIdentity()) {
        names.emplace_back(name.data(), name.size());
        if (names.back() == id) return absl::OkStatus();
      }
    }
    std::string listed;
    for (const std::string& n : names) {
      absl::StrAppend(&listed, listed.empty() ? "" : ", ", LogQuote(n));
    }
    return absl::UnauthenticatedError(absl::StrCat(
        "bad_token: client ", LogQuote(id),
        " presented a certificate for [", listed,
        "]; a client's certificate must name its id"));
  }

  // The checks before a client is told anything: a well-formed id, its
  // token and (mutual TLS) its certificate.
  absl::Status Authenticate(grpc::CallbackServerContext* context,
                            const std::string& id, const std::string& token) {
    if (!TokenMatches(id, token)) {
      return absl::UnauthenticatedError(
          "bad_token: the token does not match the run's");
    }
    RETURN_IF_ERROR(CheckClientId(id));
    return CheckPeerIdentity(context, id);
  }

  absl::Status Wait() override {
    absl::MutexLock lock(&done_mu_);
    done_mu_.Await(absl::Condition(&done_));
    return result_;
  }

  void Shutdown() override {
    SetDone(absl::CancelledError("the coordinator was asked to stop"));
  }

  ServiceStats stats() const override {
    ServiceStats s;
    for (const SessionTable::Entry& e : sessions_.Entries(deps_.clock->Now())) {
      s.clients.push_back({e.id, e.budget, e.since_contact});
    }
    absl::MutexLock lock(&stats_mu_);
    s.downloads.assign(downloads_.begin(), downloads_.end());
    s.uploads.assign(uploads_.begin(), uploads_.end());
    s.refused = refused_;
    const HeldUploads::Stats held = held_.stats();
    s.spilled = held.spilled;
    s.held_bytes = held.held_bytes;
    s.peak_held_bytes = held.peak_held_bytes;
    s.down_wire_bytes = down_wire_bytes_;
    s.down_payload_bytes = down_payload_bytes_;
    s.up_wire_bytes = up_wire_bytes_;
    s.up_payload_bytes = up_payload_bytes_;
    s.ever_joined = ever_joined_count_;
    s.timed_out = timed_out_;
    s.leave_reasons = leave_reasons_total_;
    s.polls_waiting = polls_.held();
    return s;
  }

  // The joining client's profile and caps into `info`; bad_request naming
  // the field when they are malformed, or missing where the run needs them.
  absl::Status ReadLimits(const wire::JoinRequest& request, ClientInfo& info) {
    const std::string& id = request.client_id();
    for (double cap : {request.max_time_s(), request.max_memory_mb()}) {
      if (!std::isfinite(cap) || cap < 0 || cap > 1e15) {
        return BadRequest(absl::StrCat(
            "client '", id,
            "': max_time_s and max_memory_mb must be finite and in [0, 1e15], "
            "got ",
            cap));
      }
    }
    info.max_time_s = request.max_time_s();
    info.max_memory_mb = request.max_memory_mb();
    if (request.has_profile()) {
      absl::StatusOr<TrainingProfile> profile = FromProto(request.profile());
      if (!profile.ok()) {
        return BadRequest(
            absl::StrCat("client '", id, "': ", profile.status().message()));
      }
      info.profile =
          std::make_shared<const TrainingProfile>(std::move(*profile));
      return absl::OkStatus();
    }
    if (deps_.profiles_required || info.max_time_s > 0 ||
        info.max_memory_mb > 0) {
      return BadRequest(absl::StrCat(
          "client '", id,
          "': its budget (budget.unit time or memory, or a max_time_s / "
          "max_memory_mb cap) needs its training profile at Join; it sent "
          "none"));
    }
    return absl::OkStatus();
  }

  // --- RPCs (reactor threads) ---

  grpc::ServerUnaryReactor* GetRunConfig(grpc::CallbackServerContext* context,
                                         const wire::RunConfigRequest* request,
                                         wire::RunConfigReply* reply) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    if (absl::Status s =
            Authenticate(context, request->client_id(), request->token());
        !s.ok()) {
      return Refuse(reactor, "run_config", request->client_id(), s);
    }
    if (options_.run_config_yaml.empty()) {
      return Refuse(reactor, "run_config", request->client_id(),
                    absl::FailedPreconditionError(
                        "bad_request: this coordinator does not serve its "
                        "run config; give the client --config"));
    }
    reply->set_run_id(options_.run_id);
    reply->set_config_yaml(options_.run_config_yaml);
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  grpc::ServerUnaryReactor* Join(grpc::CallbackServerContext* context,
                                 const wire::JoinRequest* request,
                                 wire::JoinReply* reply) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    if (stopping_.load())
      return Refuse(reactor, "join", request->client_id(), ShuttingDown());
    if (absl::Status s =
            Authenticate(context, request->client_id(), request->token());
        !s.ok()) {
      return Refuse(reactor, "join", request->client_id(), s);
    }
    executor_.Post([this, request, reply, reactor] {
      const std::string& id = request->client_id();
      ClientInfo info{id, request->num_samples(), 0.0};
      absl::Status s = ReadLimits(*request, info);
      absl::StatusOr<double> budget =
          s.ok() ? deps_.budget(id, request->budget()) : s;
      s = budget.status();
      if (s.ok()) {
        info.budget = *budget;
        s = deps_.engine->Join(info);
      }
      if (!s.ok()) {
        Refuse(reactor, "join", id,
               ReasonName(s) == "other" ? BadRequest(std::string(s.message()))
                                        : s);
        return;
      }
      const std::string session =
          sessions_.Open(id, info.budget, deps_.clock->Now());
      if (ever_joined_.insert(id).second) {
        absl::MutexLock lock(&stats_mu_);
        ever_joined_count_ = static_cast<int64_t>(ever_joined_.size());
      }
      reply->set_session(session);
      reply->set_run_id(options_.run_id);
      reply->set_encoding(ToProto(options_.encoding));
      reply->set_max_chunk_bytes(
          static_cast<uint64_t>(options_.max_chunk_bytes));
      reply->set_heartbeat_ms(absl::ToInt64Milliseconds(options_.heartbeat));
      reply->set_budget(info.budget);
      Log(absl::StrFormat("join %s: %d samples, budget %g", id,
                          info.num_samples, info.budget));
      reactor->Finish(grpc::Status::OK);
      AfterOp();
    });
    return reactor;
  }

  grpc::ServerUnaryReactor* Leave(grpc::CallbackServerContext* context,
                                  const wire::LeaveRequest* request,
                                  wire::LeaveReply*) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    absl::Status s = CheckSession(request->client_id(), request->session());
    if (!s.ok()) return Refuse(reactor, "leave", request->client_id(), s);
    sessions_.Close(request->client_id());
    executor_.Post([this, request, reactor] {
      deps_.engine->Leave(request->client_id());
      if (request->reason().empty()) {
        Log(absl::StrCat("leave ", request->client_id()));
      } else {
        // "<kind>: <detail>"; counted by kind, one of kLeaveKinds or "other".
        const std::string& reason = request->reason();
        const std::string said = reason.substr(0, reason.find(':'));
        std::string kind = "other";
        for (const char* k : kLeaveKinds) {
          if (said == k) kind = k;
        }
        const int64_t n = ++leave_reasons_[kind];
        {
          absl::MutexLock lock(&stats_mu_);
          leave_reasons_total_ = leave_reasons_;
        }
        Log(absl::StrCat("leave ", request->client_id(), " (",
                         LogQuote(reason, 512), "); leaves for ", kind,
                         " so far: ", n));
      }
      reactor->Finish(grpc::Status::OK);
      AfterOp();
    });
    return reactor;
  }

  grpc::ServerUnaryReactor* Heartbeat(grpc::CallbackServerContext* context,
                                      const wire::HeartbeatRequest* request,
                                      wire::HeartbeatReply* reply) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    absl::Status s = CheckSession(request->client_id(), request->session());
    if (!s.ok()) return Refuse(reactor, "heartbeat", request->client_id(), s);
    reply->set_committed_round(CurrentSnapshot().committed_round);
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  grpc::ServerUnaryReactor* GetTask(grpc::CallbackServerContext* context,
                                    const wire::GetTaskRequest* request,
                                    wire::TaskReply* reply) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    if (stopping_.load())
      return Refuse(reactor, "get_task", request->client_id(), ShuttingDown());
    absl::Status s = CheckSession(request->client_id(), request->session());
    if (!s.ok()) return Refuse(reactor, "get_task", request->client_id(), s);
    // Held at most half the client timeout too: the poll's arrival is the
    // client's last contact while it waits (daemons do not heartbeat while
    // a poll is in flight).
    const absl::Duration wait = std::clamp(
        absl::Milliseconds(request->wait_ms()), absl::ZeroDuration(),
        std::min(options_.max_poll, options_.client_timeout / 2));
    polls_.Add(request->client_id(),
               Poll{context, reactor, reply},
               absl::Now() + wait);
    executor_.Post([this] { EvaluatePolls(); });
    return reactor;
  }

  grpc::ServerUnaryReactor* ReportScores(grpc::CallbackServerContext* context,
                                         const wire::ScoresRequest* request,
                                         wire::ScoresReply*) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    if (stopping_.load())
      return Refuse(reactor, "scores", request->client_id(), ShuttingDown());
    absl::Status s = CheckSession(request->client_id(), request->session());
    if (!s.ok()) return Refuse(reactor, "scores", request->client_id(), s);
    executor_.Post([this, request, reactor] {
      const std::vector<double> scores(request->scores().begin(),
                                       request->scores().end());
      if (request->scoring_s() > 0 || request->scoring_peak_bytes() > 0) {
        ClientUsage usage;
        if (request->scoring_s() > 0) usage.score_s = request->scoring_s();
        if (request->scoring_peak_bytes() > 0) {
          usage.score_peak_bytes = request->scoring_peak_bytes();
        }
        // For the metrics only: a bad value is dropped, never a refusal.
        (void)deps_.engine->ReportUsage(request->client_id(), request->round(),
                                        usage);
      }
      absl::Status st = deps_.engine->SubmitScores(request->client_id(),
                                                   request->round(), scores);
      if (!st.ok()) {
        Refuse(reactor, "scores", request->client_id(), st);
      } else {
        Log(absl::StrFormat("round %d: scores from %s", request->round(),
                            request->client_id()));
        reactor->Finish(grpc::Status::OK);
      }
      AfterOp();
    });
    return reactor;
  }

  grpc::ServerUnaryReactor* SecAggStep(grpc::CallbackServerContext* context,
                                       const wire::SecAggStepRequest* request,
                                       wire::SecAggStepReply*) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    if (stopping_.load())
      return Refuse(reactor, "secagg", request->client_id(), ShuttingDown());
    absl::Status s = CheckSession(request->client_id(), request->session());
    if (!s.ok()) return Refuse(reactor, "secagg", request->client_id(), s);
    executor_.Post([this, request, reactor] {
      const std::string& id = request->client_id();
      const int64_t round = request->round();
      absl::Status st;
      const char* what = "key step";
      if (request->has_advert()) {
        what = "key advert";
        absl::StatusOr<SecAggAdvert> advert = FromProto(request->advert());
        st = advert.ok() ? deps_.engine->SubmitAdvert(id, round, *advert)
                         : Rejection(RejectReason::kProtocol,
                                     std::string(advert.status().message()));
      } else if (request->has_shares()) {
        what = "key shares";
        std::vector<SecAggShare> shares;
        for (const wire::SecAggShare& w : request->shares().shares()) {
          shares.push_back(FromProto(w));
        }
        st = deps_.engine->SubmitShares(id, round, shares);
      } else if (request->has_unmask()) {
        what = "unmask response";
        st =
            deps_.engine->SubmitUnmask(id, round, FromProto(request->unmask()));
      } else {
        st = BadRequest("a secure-aggregation step without a step");
      }
      if (!st.ok()) {
        Refuse(reactor, "secagg", id, st);
      } else {
        Log(absl::StrFormat("round %d: %s from %s", round, what, id));
        reactor->Finish(grpc::Status::OK);
      }
      AfterOp();
    });
    return reactor;
  }

  grpc::ServerWriteReactor<grpc::ByteBuffer>* FetchLayers(
      grpc::CallbackServerContext* context,
      const grpc::ByteBuffer* request) override;

  grpc::ServerReadReactor<wire::MaskedMessage>* UploadMasked(
      grpc::CallbackServerContext* context, wire::UploadReply* reply) override;

  grpc::ServerReadReactor<wire::UploadMessage>* UploadUpdate(
      grpc::CallbackServerContext* context, wire::UploadReply* reply) override;

  // --- shared with the stream reactors ---

  absl::Status CheckSession(const std::string& id, const std::string& session) {
    if (!sessions_.Touch(id, session, deps_.clock->Now())) {
      return UnknownSession(id);
    }
    return absl::OkStatus();
  }

  Snapshot CurrentSnapshot() {
    absl::MutexLock lock(&mu_);
    return snapshot_;
  }

  const ServiceOptions& options() const { return options_; }
  const std::vector<LayerLayout>& layouts() const { return layouts_; }
  const std::vector<std::string>& layer_names() const { return layer_names_; }
  bool stopping() const { return stopping_.load(); }

  void CountDownload(int64_t bytes) { bytes_down_.fetch_add(bytes); }

  // An upload refused before it reached the engine thread.
  void RecordUpload(TransferRecord record) {
    absl::MutexLock lock(&stats_mu_);
    uploads_.push_back(std::move(record));
    if (uploads_.size() > kMaxTransferRecords) uploads_.pop_front();
  }

  void RecordDownload(TransferRecord record) {
    absl::MutexLock lock(&stats_mu_);
    if (record.outcome != "ok") {
      ++refused_[record.outcome];
    } else {
      down_wire_bytes_ += record.wire_bytes;
      down_payload_bytes_ += record.payload_bytes;
    }
    downloads_.push_back(std::move(record));
    if (downloads_.size() > kMaxTransferRecords) downloads_.pop_front();
  }

  // Counted always; logged at most 5 a reason every 10 s, the id quoted
  // and cut, the message cut.
  void CountRefusal(const std::string& rpc, const std::string& id,
                    const absl::Status& s) {
    const std::string reason = ReasonName(s);
    int64_t held_back = 0;
    bool log = false;
    {
      absl::MutexLock lock(&stats_mu_);
      ++refused_[reason];
      log = refusal_log_limit_.Allow(reason, absl::Now(), &held_back);
    }
    if (!log) return;
    const absl::string_view message = s.message();
    Log(absl::StrCat(
        "refused ", rpc, " from ", LogQuote(id), ": ",
        message.substr(0, 512), message.size() > 512 ? "...(cut)" : "",
        held_back > 0 ? absl::StrCat(" (", held_back, " more ", reason,
                                     " refusals were not logged)")
                      : ""));
  }

  // Streams (streams.h): opened by the reactors, admitted at an upload's
  // header, read, closed; overdue ones cancelled by the ticker.
  void OpenStream(const void* key, grpc::CallbackServerContext* context) {
    streams_.Open(key, [context] { context->TryCancel(); });
  }
  void SetStreamBytes(const void* key, int64_t bytes) {
    streams_.AddBytes(key, bytes);
  }
  void StreamRead(const void* key) { streams_.Read(key); }
  void ReleaseStream(const void* key) { streams_.Release(key); }
  // A new file name under spill_dir for an update kept on disk.
  std::string NextSpillPath(const std::string& kind) {
    return absl::StrCat(options_.spill_dir, "/", kind, "-",
                        spill_seq_.fetch_add(1) + 1, ".bin");
  }
  void CloseStream(const void* key) { streams_.Close(key); }

  // An upload's first message: admitted only for a client that holds a
  // training task of `round`, in the run's mode, with no other upload
  // stream open, and while its `bytes` fit under the cap of bytes in
  // flight. Nothing of the stream has been buffered yet.
  absl::Status AdmitUpload(const void* key, const std::string& id,
                           int64_t round, bool masked, int64_t bytes) {
    if (masked != options_.secure_aggregation) {
      return Rejection(
          RejectReason::kProtocol,
          masked ? absl::StrCat("client '", id,
                                "' sent a masked update; this run does not "
                                "aggregate securely")
                 : absl::StrCat("client '", id,
                                "' sent a plain update; this run aggregates "
                                "securely (privacy.secure_aggregation)"));
    }
    RETURN_IF_ERROR(deps_.engine->CheckUpload(id, round));
    return streams_.AdmitUpload(key, id, bytes);
  }

  // Ticker: streams past their deadline are cancelled (their reactors then
  // finish them and refuse what was read).
  void CancelOverdueStreams() {
    for (const std::string& what : streams_.CancelOverdue(absl::Now())) {
      Log(absl::StrCat("cancelled ", what, ": past its stream deadline"));
    }
  }

  // Called on a reactor thread with a fully decoded, checked update.
  // A complete masked update (UploadMasked): to the engine at once (the sums
  // of secure aggregation do not depend on the order updates arrive in).
  void SubmitMaskedInput(SecAggMaskedInput input, ClientUsage usage,
                         int64_t wire_bytes,
                         std::function<void(const absl::Status&)> done) {
    executor_.Post([this, input = std::move(input), usage, wire_bytes,
                    done = std::move(done)] {
      if (stopping_.load()) {
        done(ShuttingDown());
        return;
      }
      (void)deps_.engine->ReportUsage(input.id, input.round, usage);
      absl::Status st =
          deps_.engine->SubmitMasked(input.id, input.round, input);
      if (!st.ok()) {
        CountRefusal("upload", input.id, st);
      } else {
        wire_bytes_up_ += wire_bytes;
        Log(absl::StrFormat("round %d: masked update from %s", input.round,
                            input.id));
      }
      done(st);
      AfterOp();
    });
  }

  void SubmitUpload(std::shared_ptr<HeldUpload> upload) {
    executor_.Post([this, upload] {
      if (stopping_.load()) {
        FinishUpload(*upload, ShuttingDown());
        return;
      }
      if (!options_.ordered_aggregation) {
        SubmitNow(*upload);
        AfterOp();
        return;
      }
      if (held_.contains(upload->id)) {
        FinishUpload(
            *upload,
            Rejection(RejectReason::kDuplicate,
                      absl::StrCat("client '", upload->id,
                                   "' already has an update waiting")));
        return;
      }
      if (!Blocked(*upload)) {  // its turn already: no need to wait
        SubmitNow(*upload);
        AfterOp();
        return;
      }
      held_.Hold(upload);
      // In memory it counts under max_held_bytes, on disk not at all.
      if (upload->release) upload->release();
      AfterOp();
    });
  }

 private:
  grpc::ServerUnaryReactor* Refuse(grpc::ServerUnaryReactor* reactor,
                                   const std::string& rpc,
                                   const std::string& id,
                                   const absl::Status& s) {
    CountRefusal(rpc, id, s);
    reactor->Finish(ToGrpc(s));
    return reactor;
  }

  void Log(const std::string& line) {
    if (deps_.log == nullptr) return;
    absl::MutexLock lock(&log_mu_);
    *deps_.log << absl::FormatTime("%H:%M:%E3S", absl::Now(),
                                   absl::LocalTimeZone())
               << " coordinator: " << OneLine(line) << std::endl;
  }

  void SetDone(absl::Status status) {
    absl::MutexLock lock(&done_mu_);
    if (done_) return;
    done_ = true;
    result_ = std::move(status);
  }

  bool done() {
    absl::MutexLock lock(&done_mu_);
    return done_;
  }

  // --- engine thread ---

  void FinishUpload(HeldUpload& u, const absl::Status& s) {
    if (!u.spill_path.empty()) {  // refused before it was read from disk
      std::remove(u.spill_path.c_str());
      u.spill_path.clear();
    }
    u.record.outcome = s.ok() ? "ok" : ReasonName(s);
    if (!s.ok()) CountRefusal("upload", u.id, s);
    {
      absl::MutexLock lock(&stats_mu_);
      if (s.ok()) {
        up_wire_bytes_ += u.record.wire_bytes;
        up_payload_bytes_ += u.record.payload_bytes;
      }
      uploads_.push_back(u.record);
      if (uploads_.size() > kMaxTransferRecords) uploads_.pop_front();
    }
    u.done(s);
  }

  void SubmitNow(HeldUpload& u) {
    if (u.cancelled != nullptr && u.cancelled->load()) {
      const absl::Status cancelled = absl::CancelledError(
          "cancelled: the client cancelled the upload before it was applied");
      CountRefusal("upload", u.id, cancelled);
      u.update.clear();
      FinishUpload(u, cancelled);
      return;
    }
    if (u.usage.train_s >= 0 || u.usage.peak_bytes >= 0) {
      (void)deps_.engine->ReportUsage(u.id, u.round, u.usage);  // metrics only
    }
    absl::Status s = u.spill_path.empty()
                         ? deps_.engine->SubmitUpdate(u.id, u.round,
                                                      u.num_samples, u.update)
                         : SubmitFromDisk(u);
    if (s.ok()) {
      wire_bytes_up_ += u.record.wire_bytes;
      Log(absl::StrFormat(
          "round %d: update from %s, %d layers [%s], %d wire bytes for %d "
          "values (%.4f of the %s payload)",
          u.round, u.id, u.record.layers.size(),
          absl::StrJoin(u.record.layers, ","), u.record.wire_bytes,
          u.record.numel,
          u.record.payload_bytes > 0
              ? static_cast<double>(u.record.wire_bytes) /
                    u.record.payload_bytes
              : 0.0,
          EncodingName(options_.encoding)));
    }
    u.update.clear();
    FinishUpload(u, s);
  }

  // Folds an update kept on disk from its file (a tensor at a time) and
  // removes the file. The file's own errors are "spill_lost".
  absl::Status SubmitFromDisk(HeldUpload& u) {
    absl::Status s;
    absl::StatusOr<std::unique_ptr<DeltaSource>> values =
        OpenSpilledValues(u.spill_path, u.update);
    if (values.ok()) {
      s = deps_.engine->SubmitUpdateFrom(u.id, u.round, u.num_samples,
                                         std::move(u.update), **values);
    } else {
      s = values.status();
    }
    std::remove(u.spill_path.c_str());
    u.spill_path.clear();
    if (!s.ok() && (s.code() == absl::StatusCode::kDataLoss ||
                    s.code() == absl::StatusCode::kNotFound)) {
      return absl::InternalError(
          absl::StrCat("spill_lost: the update waited on disk and could not "
                       "be read back (",
                       s.message(), "); send it again"));
    }
    return s;
  }

  // Whether a lower-id client still owes an update for the held one's round.
  bool Blocked(const HeldUpload& u) {
    for (const std::string& other : ever_joined_) {
      if (other >= u.id) break;
      const Task t = deps_.engine->TaskFor(other);
      if (t.kind == TaskKind::kTrain && t.round == u.round) return true;
    }
    return false;
  }

  void Drain() {
    held_.Drain([this](const HeldUpload& u) { return Blocked(u); },
                [this](HeldUpload& u) { SubmitNow(u); });
  }

  void FlushHeld(const absl::Status& instead = absl::OkStatus()) {
    held_.Flush(
        instead, [this](HeldUpload& u) { SubmitNow(u); },
        [this](HeldUpload& u, const absl::Status& s) { FinishUpload(u, s); });
  }

  // After a commit: re-encode the layers that changed (once, here on the
  // engine thread, for every client that will download them).
  void RefreshSnapshot() {
    const int64_t committed = deps_.engine->committed_round();
    Snapshot previous = CurrentSnapshot();
    if (committed == previous.committed_round) return;
    // The model is copied under the engine's lock (the copy shares its
    // values) and the layers whose version moved are encoded outside it; the
    // others share their encoding with `previous`.
    ModelWeights global;
    deps_.engine->VisitGlobal([&](const ModelWeights& g) { global = g; });
    Snapshot next;
    next.committed_round = committed;
    next.layers = EncodeSnapshot(global, &previous, options_.encoding,
                                 options_.chunk_bytes);
    absl::MutexLock lock(&mu_);
    snapshot_ = std::move(next);
  }

  void DeliverRecords() {
    for (RoundRecord& r : deps_.engine->TakeRecords()) {
      r.bytes_down = bytes_down_.exchange(0);
      r.wire_bytes_up = wire_bytes_up_;
      wire_bytes_up_ = 0;
      std::string eval;
      if (r.evaluated) {
        eval = absl::StrFormat(", accuracy %.4f, loss %.4f", r.eval.accuracy,
                               r.eval.loss);
      }
      int contributed = 0;
      for (const ClientRoundRecord& c : r.clients) contributed += c.contributed;
      if (r.private_round) {
        eval +=
            absl::StrFormat(", epsilon %.4g (delta %g)", r.epsilon, r.delta);
      }
      Log(absl::StrFormat(
          "round %d committed (attempt %d): %d of %d clients, changed [%s]%s, "
          "up %d wire bytes (%d as float32 values), down %d wire bytes",
          r.round, r.attempt, contributed, r.clients.size(),
          absl::StrJoin(r.changed_layers, ","), eval, r.wire_bytes_up,
          r.bytes_up, r.bytes_down));
      if (deps_.on_round) deps_.on_round(r);
    }
  }

  void MaybeStartRound() {
    if (deps_.engine->round_running() || deps_.engine->finished()) return;
    if (!started_any_) {
      const int joined = sessions_.size();
      if (joined < options_.wait_for_clients &&
          deps_.clock->Now() - started_at_ <
              options_.wait_for_clients_timeout) {
        return;
      }
    }
    absl::Status s = deps_.engine->StartRound();
    if (!s.ok()) {
      const std::string why(s.message());
      if (why != last_start_refusal_) Log(absl::StrCat("waiting: ", why));
      last_start_refusal_ = why;
      return;
    }
    last_start_refusal_.clear();
    if (deps_.engine->finished()) {
      Log(absl::StrFormat(
          "run finished after round %d: another round would take epsilon "
          "past the target (spent %.4g)",
          deps_.engine->committed_round(), deps_.engine->epsilon()));
      return;
    }
    started_any_ = true;
    wire_bytes_up_ = 0;  // a retried round counts its own attempt only
    const int64_t round = deps_.engine->committed_round() + 1;
    std::vector<std::string> scoring, training;
    for (const std::string& id : ever_joined_) {
      const Task t = deps_.engine->TaskFor(id);
      if (t.kind == TaskKind::kScore) scoring.push_back(id);
      if (t.kind == TaskKind::kTrain) {
        training.push_back(
            absl::StrCat(id, "[", absl::StrJoin(t.layers, ","), "]"));
      }
    }
    Log(absl::StrFormat(
        "round %d started: %s%s", round,
        scoring.empty() ? "" : "scoring " + absl::StrJoin(scoring, " "),
        training.empty() ? "" : "training " + absl::StrJoin(training, " ")));
  }

  // Answers the long polls that have a task, and those whose wait ran out
  // (long_polls.h: only new polls, and those of clients whose task may have
  // changed, are asked).
  void EvaluatePolls() {
    if (stopping_.load()) {
      polls_.FinishAll(
          [](Poll& p) { p.reactor->Finish(ToGrpc(ShuttingDown())); });
      return;
    }
    polls_.Evaluate(
        [this](uint64_t since) {
          return deps_.engine->TaskChangesSince(since);
        },
        absl::Now(),
        [this](const std::string& id, Poll& p, bool last_chance) {
          return AnswerPoll(id, p, last_chance);
        });
  }

  // Answers `p` with its task and returns true, or returns false when it
  // has none yet and may wait on (not its last chance, still connected).
  bool AnswerPoll(const std::string& id, Poll& p, bool last_chance) {
    const Task t = deps_.engine->TaskFor(id);
    if (t.kind == TaskKind::kWait && !last_chance &&
        !p.context->IsCancelled()) {
      return false;
    }
    switch (t.kind) {
      case TaskKind::kWait:
        p.reply->set_kind(wire::TaskReply::WAIT);
        break;
      case TaskKind::kScore:
        p.reply->set_kind(wire::TaskReply::SCORE);
        p.reply->set_metric(deps_.metric);
        p.reply->set_score_from(t.score_from);
        break;
      case TaskKind::kTrain:
        p.reply->set_kind(wire::TaskReply::TRAIN);
        for (const std::string& l : t.layers) p.reply->add_layers(l);
        for (int n : t.layer_participants) {
          p.reply->add_layer_participants(n);
        }
        for (const SecAggShare& share : t.shares) {
          ToProto(share, p.reply->add_shares());
        }
        break;
      case TaskKind::kAdvertise:
        p.reply->set_kind(wire::TaskReply::ADVERTISE);
        for (const std::string& l : t.layers) p.reply->add_layers(l);
        break;
      case TaskKind::kShareKeys:
        p.reply->set_kind(wire::TaskReply::SHARE_KEYS);
        if (t.roster) ToProto(*t.roster, p.reply->mutable_roster());
        break;
      case TaskKind::kUnmask:
        p.reply->set_kind(wire::TaskReply::UNMASK);
        if (t.unmask) ToProto(*t.unmask, p.reply->mutable_unmask());
        break;
      case TaskKind::kFinished: {
        p.reply->set_kind(wire::TaskReply::FINISHED);
        sessions_.MarkToldFinished(id);
        break;
      }
    }
    p.reply->set_round(t.round);
    if (t.kind != TaskKind::kWait && t.kind != TaskKind::kFinished) {
      p.reply->set_deadline_ms(std::max<int64_t>(
          0, absl::ToInt64Milliseconds(t.deadline - deps_.clock->Now())));
    }
    p.reactor->Finish(grpc::Status::OK);
    return true;
  }

  // After every engine call: hand held updates over, publish a new global,
  // deliver committed rounds, start the next round, answer waiting polls.
  void AfterOp() {
    if (options_.ordered_aggregation) Drain();
    RefreshSnapshot();
    DeliverRecords();
    if (!done()) MaybeStartRound();
    EvaluatePolls();
  }

  void ExpireSessions() {
    // A pass walks every session: at most one a second (and ten per client
    // timeout), not one per tick — 10,000 sessions ten times a second held
    // the session lock every heartbeat and poll takes.
    const absl::Time now = deps_.clock->Now();
    if (now - last_expiry_pass_ <
        std::min(absl::Seconds(1), options_.client_timeout / 10)) {
      return;
    }
    last_expiry_pass_ = now;
    const std::vector<std::string> expired =
        sessions_.Expire(now, options_.client_timeout);
    if (!expired.empty()) {
      absl::MutexLock lock(&stats_mu_);
      timed_out_ += static_cast<int64_t>(expired.size());
    }
    for (const std::string& id : expired) {
      deps_.engine->Leave(id);
      Log(absl::StrCat("client ", id, " timed out (nothing heard for ",
                       absl::FormatDuration(options_.client_timeout),
                       "); it left the run"));
    }
  }

  void TickOp() {
    tick_queued_.store(false);
    CancelOverdueStreams();
    if (done()) return;
    ExpireSessions();
    absl::Status s;
    if (held_.empty()) {
      s = deps_.engine->Tick();
    } else {
      // Held updates count as answered: add them before the deadline drops
      // their senders. Before the deadline Tick would do nothing anyway.
      const Task t = deps_.engine->TaskFor(held_.first_id());
      if (t.kind != TaskKind::kTrain || deps_.clock->Now() >= t.deadline) {
        FlushHeld();
        s = deps_.engine->Tick();
      }
    }
    if (!s.ok()) {
      Log(absl::StrCat("the run failed: ", s.message()));
      SetDone(s);
      AfterOp();
      return;
    }
    AfterOp();
    if (deps_.engine->finished()) {
      const absl::Time now = deps_.clock->Now();
      if (finished_at_ == absl::InfiniteFuture()) {
        finished_at_ = now;
        Log(absl::StrCat("the run finished after round ",
                         deps_.engine->committed_round(),
                         "; telling the clients"));
      }
      const bool all_told = sessions_.AllToldFinished();
      if (all_told || now - finished_at_ >= options_.linger) {
        SetDone(absl::OkStatus());
      }
    }
  }

  void TickerLoop() {
    while (!ticker_stop_.load()) {
      absl::SleepFor(options_.tick);
      if (!tick_queued_.exchange(true)) executor_.Post([this] { TickOp(); });
    }
  }

  void Stop() {
    SetDone(absl::CancelledError("the coordinator was asked to stop"));
    ticker_stop_.store(true);
    if (ticker_.joinable()) ticker_.join();
    stopping_.store(true);
    executor_.Post([this] {
      FlushHeld(ShuttingDown());
      EvaluatePolls();
    });
    if (server_ != nullptr) {
      server_->Shutdown(std::chrono::system_clock::now() +
                        std::chrono::seconds(2));
    }
    executor_.Post([this] {
      FlushHeld(ShuttingDown());
      EvaluatePolls();
    });
    executor_.Stop();
    if (server_ != nullptr) server_->Wait();
  }

  const ServiceOptions options_;
  const ServiceDeps deps_;
  std::vector<LayerLayout> layouts_;
  std::vector<std::string> layer_names_;
  absl::Time started_at_;

  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  SerialExecutor executor_;
  std::thread ticker_;
  std::atomic<bool> ticker_stop_{false};
  std::atomic<bool> tick_queued_{false};
  std::atomic<bool> stopping_{false};
  std::atomic<int64_t> bytes_down_{0};
  int64_t wire_bytes_up_ =
      0;  // engine thread: accepted uploads of this attempt

  mutable absl::Mutex mu_;
  SessionTable sessions_;
  LongPolls<Poll> polls_;
  Snapshot snapshot_ ABSL_GUARDED_BY(mu_);
  absl::Time last_expiry_pass_ = absl::InfinitePast();  // executor only

  // Engine thread only.
  std::set<std::string> ever_joined_;
  HeldUploads held_;
  bool started_any_ = false;
  std::string last_start_refusal_;
  // Clients that left with a reason, by its kind ("work_failed", ...).
  std::map<std::string, int64_t> leave_reasons_;
  absl::Time finished_at_ = absl::InfiniteFuture();

  mutable absl::Mutex stats_mu_;
  std::deque<TransferRecord> downloads_ ABSL_GUARDED_BY(stats_mu_);
  std::deque<TransferRecord> uploads_ ABSL_GUARDED_BY(stats_mu_);
  std::map<std::string, int64_t> refused_ ABSL_GUARDED_BY(stats_mu_);
  int64_t down_wire_bytes_ ABSL_GUARDED_BY(stats_mu_) = 0;
  int64_t down_payload_bytes_ ABSL_GUARDED_BY(stats_mu_) = 0;
  int64_t up_wire_bytes_ ABSL_GUARDED_BY(stats_mu_) = 0;
  int64_t up_payload_bytes_ ABSL_GUARDED_BY(stats_mu_) = 0;
  int64_t ever_joined_count_ ABSL_GUARDED_BY(stats_mu_) = 0;
  int64_t timed_out_ ABSL_GUARDED_BY(stats_mu_) = 0;
  std::map<std::string, int64_t> leave_reasons_total_
      ABSL_GUARDED_BY(stats_mu_);
  PerKeyRateLimit refusal_log_limit_ ABSL_GUARDED_BY(stats_mu_){
      5, absl::Seconds(10)};

  std::atomic<int64_t> spill_seq_{0};
  StreamRegistry streams_{options_.stream_timeout,
                         options_.max_upload_bytes_in_flight,
                         options_.max_uploads_in_flight};

  absl::Mutex log_mu_;

  absl::Mutex done_mu_;
  bool done_ ABSL_GUARDED_BY(done_mu_) = false;
  absl::Status result_ ABSL_GUARDED_BY(done_mu_);
};

// Streams the layers the client lacks: a manifest, then the snapshot's
// serialized chunks, handed to gRPC without a copy.
class FetchReactor : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  FetchReactor(CoordinatorServerImpl* service,
               grpc::CallbackServerContext* context,
               const grpc::ByteBuffer* raw)
      : service_(service) {
    service_->OpenStream(this, context);
    wire::FetchRequest request;
    grpc::ByteBuffer copy(*raw);  // shares the slices
    grpc::ProtoBufferReader reader(&copy);
    absl::Status s = request.ParseFromZeroCopyStream(&reader)
                         ? absl::OkStatus()
                         : BadRequest("a FetchRequest that does not parse");
    record_.client = request.client_id();
    if (s.ok()) {
      s = service->stopping()
              ? ShuttingDown()
              : service->CheckSession(request.client_id(), request.session());
    }
    if (!s.ok()) {
      service->CountRefusal("fetch", request.client_id(), s);
      Finish(ToGrpc(s));
      return;
    }
    snapshot_ = service->CurrentSnapshot();
    const ServiceOptions& options = service->options();
    std::map<std::string, int64_t> held;
    if (request.run_id() == options.run_id) {
      for (const wire::LayerVersion& v : request.held())
        held[v.layer()] = v.version();
    }
    wire::FetchReply reply;
    wire::FetchManifest* manifest = reply.mutable_manifest();
    manifest->set_run_id(options.run_id);
    manifest->set_committed_round(snapshot_.committed_round);
    manifest->set_encoding(ToProto(options.encoding));
    for (const std::shared_ptr<const EncodedLayer>& layer : snapshot_.layers) {
      wire::LayerVersion* v = manifest->add_current();
      v->set_layer(layer->layer);
      v->set_version(layer->version);
      auto it = held.find(layer->layer);
      if (it != held.end() && it->second == layer->version) continue;
      manifest->add_sending(layer->layer);
      sending_.push_back(layer);
      record_.layers.push_back(layer->layer);
      record_.numel += layer->numel;
      record_.payload_bytes += layer->payload_bytes;
    }
    manifest->set_sending_bytes(record_.payload_bytes);
    record_.round = snapshot_.committed_round;
    service_->SetStreamBytes(this, record_.payload_bytes);
    const std::string bytes = reply.SerializeAsString();
    grpc::Slice slice(bytes);
    buffer_ = grpc::ByteBuffer(&slice, 1);
    Send(static_cast<int64_t>(bytes.size()));
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      record_.outcome = "cancelled";
      service_->RecordDownload(std::move(record_));
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the client went away"));
      return;
    }
    while (layer_ < sending_.size() &&
           message_ >= sending_[layer_]->messages.size()) {
      ++layer_;
      message_ = 0;
    }
    if (layer_ >= sending_.size()) {
      record_.outcome = "ok";
      service_->RecordDownload(std::move(record_));
      Finish(grpc::Status::OK);
      return;
    }
    // Each slice keeps the encoded layer alive until gRPC is done with it.
    const std::shared_ptr<const EncodedLayer>& layer = sending_[layer_];
    std::vector<grpc::Slice> slices;
    int64_t bytes = 0;
    for (std::string_view piece : layer->Pieces(message_++)) {
      auto* owner = new std::shared_ptr<const EncodedLayer>(layer);
      slices.emplace_back(
          const_cast<char*>(piece.data()), piece.size(),
          [](void* p) {
            delete static_cast<std::shared_ptr<const EncodedLayer>*>(p);
          },
          owner);
      bytes += static_cast<int64_t>(piece.size());
    }
    buffer_ = grpc::ByteBuffer(slices.data(), slices.size());
    Send(bytes);
  }

  void OnDone() override {
    service_->CloseStream(this);
    delete this;
  }

 private:
  void Send(int64_t message_bytes) {
    const int64_t bytes = message_bytes + 5;  // + gRPC's length prefix
    record_.wire_bytes += bytes;
    service_->CountDownload(bytes);
    StartWrite(&buffer_);
  }

  CoordinatorServerImpl* service_;
  Snapshot snapshot_;
  std::vector<std::shared_ptr<const EncodedLayer>> sending_;
  size_t layer_ = 0;
  size_t message_ = 0;
  grpc::ByteBuffer buffer_;
  TransferRecord record_;
};

// Reads a manifest and the chunks of a sparse update, checking each as it
// arrives; hands the decoded update to the engine thread.
class UploadReactor : public grpc::ServerReadReactor<wire::UploadMessage> {
 public:
  UploadReactor(CoordinatorServerImpl* service,
                grpc::CallbackServerContext* context, wire::UploadReply* reply)
      : service_(service), reply_(reply) {
    service_->OpenStream(this, context);
    StartRead(&message_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      EndOfStream();
      return;
    }
    wire_bytes_ += WireBytes(message_);
    absl::Status s;
    if (!decoder_.has_value()) {
      s = Start();
    } else if (message_.has_chunk()) {
      s = AddChunk(message_.chunk(), *decoder_);
      if (s.ok() && disk_ != nullptr) s = ToDisk();
    } else {
      s = BadRequest("a second manifest in one upload");
    }
    if (!s.ok()) {
      Refuse(s);
      return;
    }
    StartRead(&message_);
  }

  // The client cancelled or its connection died: whatever arrived is
  // discarded, unless the engine already accepted the complete update.
  void OnCancel() override { cancelled_->store(true); }

  void OnDone() override {
    service_->CloseStream(this);
    delete this;
  }

 private:
  absl::Status Start() {
    if (!message_.has_manifest()) {
      return BadRequest("an upload must start with its manifest");
    }
    const wire::UploadManifest& m = message_.manifest();
    id_ = m.client_id();
    record_.round = m.round();
    if (service_->stopping()) return ShuttingDown();
    RETURN_IF_ERROR(service_->CheckSession(m.client_id(), m.session()));
    authenticated_ = true;
    ASSIGN_OR_RETURN(Encoding encoding, FromProto(m.encoding()));
    const ServiceOptions& options = service_->options();
    if (encoding != options.encoding) {
      return WireRefusal(
          WireError::kBadEncoding,
          absl::StrCat("the update is in ", EncodingName(encoding),
                       ", the run uses ", EncodingName(options.encoding)));
    }
    std::vector<ExpectedLayer> expected;
    std::set<std::string> seen;
    for (const std::string& layer : m.layers()) {
      const auto& layouts = service_->layouts();
      auto it =
          std::find_if(layouts.begin(), layouts.end(),
                       [&](const LayerLayout& l) { return l.layer == layer; });
      if (it == layouts.end()) {
        return WireRefusal(WireError::kUnknownLayer,
                           absl::StrCat("the manifest names layer '", layer,
                                        "', which the model does not have"));
      }
      if (!seen.insert(layer).second) {
        return WireRefusal(
            WireError::kUnexpectedLayer,
            absl::StrCat("the manifest names layer '", layer, "' twice"));
      }
      expected.push_back({layer, *it});
      record_.layers.push_back(layer);
    }
    if (m.scores_size() != 0 && m.scores_size() != m.layers_size()) {
      return BadRequest(
          absl::StrCat("the manifest has ", m.scores_size(), " scores for ",
                       m.layers_size(), " layers"));
    }
    for (int i = 0; i < m.scores_size(); ++i) {
      if (!std::isfinite(m.scores(i)) || m.scores(i) < 0) {
        return BadRequest(
            absl::StrCat("the manifest's score of layer '", m.layers(i),
                         "' is ", m.scores(i), "; scores are finite and >= 0"));
      }
      scores_[m.layers(i)] = m.scores(i);
    }
    int64_t bytes = 0;
    for (const ExpectedLayer& e : expected) {
      bytes += e.layout->numel * BytesPerValue(options.encoding);
    }
    RETURN_IF_ERROR(service_->AdmitUpload(this, id_, m.round(),
                                          /*masked=*/false, bytes));
    if (options.receive_to_disk) {
      disk_ = std::make_unique<SpillWriter>(service_->NextSpillPath("recv"));
    }
    DecoderLimits limits;
    limits.encoding = options.encoding;
    limits.max_chunk_bytes = options.max_chunk_bytes;
    decoder_.emplace(std::move(expected), service_->layer_names(), limits);
    record_.client = id_;
    record_.round = m.round();
    round_ = m.round();
    num_samples_ = m.num_samples();
    if (m.train_s() > 0) usage_.train_s = m.train_s();
    if (m.peak_bytes() > 0) usage_.peak_bytes = m.peak_bytes();
    TakeDevice(m, usage_);
    return absl::OkStatus();
  }

  void EndOfStream() {
    service_->StreamRead(this);
    absl::Status s = decoder_.has_value()
                         ? decoder_->Finish()
                         : BadRequest("an upload without a manifest");
    if (s.ok() && cancelled_->load()) {
      s = absl::CancelledError("cancelled: the client cancelled the upload");
    }
    if (!s.ok()) {
      Refuse(s);
      return;
    }
    auto held = std::make_shared<HeldUpload>();
    held->id = id_;
    held->round = round_;
    held->num_samples = num_samples_;
    held->usage = usage_;
    held->record = record_;
    held->record.wire_bytes = wire_bytes_;
    held->cancelled = cancelled_;
    held->record.payload_bytes = decoder_->payload_bytes();
    if (disk_ != nullptr) {
      s = disk_->Finish();
      if (!s.ok()) {
        Refuse(absl::UnavailableError(
            absl::StrCat("busy: the coordinator cannot store the update (",
                         s.message(), "); send it again later")));
        return;
      }
      held->update = std::move(on_disk_);
      held->spill_path = disk_->path();
      // On disk now: its place under the caps is free.
      service_->ReleaseStream(this);
    } else {
      held->update = ToDeltas(decoder_->TakeLayers());
    }
    for (LayerDelta& d : held->update) {
      auto score = scores_.find(d.group);
      if (score != scores_.end()) d.score = score->second;
    }
    for (const LayerDelta& d : held->update) {
      for (const Tensor32& t : d.tensors) {
        held->record.numel += ShapeNumel(t.shape);
      }
    }
    const int64_t wire_bytes = wire_bytes_;
    held->done = [this, wire_bytes](const absl::Status& status) {
      reply_->set_bytes_received(static_cast<uint64_t>(wire_bytes));
      End(ToGrpc(status));
    };
    held->release = [this] { service_->ReleaseStream(this); };
    service_->SubmitUpload(std::move(held));
  }

  // receive_to_disk: the layers completed so far go to the file, their
  // names and shapes stay.
  absl::Status ToDisk() {
    for (LayerWeights& layer : decoder_->TakeCompleted()) {
      RETURN_IF_ERROR(disk_->Append(layer.tensors));
      for (Tensor32& t : layer.tensors) t.values.clear();
      on_disk_.push_back({std::move(layer.group), std::move(layer.tensors)});
    }
    return absl::OkStatus();
  }

  void Refuse(const absl::Status& s) {
    service_->CountRefusal("upload", id_.empty() ? "?" : id_, s);
    if (authenticated_) {  // an id of a live session: short and valid
      record_.client = id_;
      record_.wire_bytes = wire_bytes_;
      record_.outcome = ReasonName(s);
      service_->RecordUpload(record_);
    }
    End(ToGrpc(s));
  }

  // Finishes the call; the stream's place (one per session, its bytes in
  // flight) is free before the client hears the answer.
  void End(const grpc::Status& status) {
    service_->CloseStream(this);
    Finish(status);
  }

  CoordinatorServerImpl* service_;
  wire::UploadReply* reply_;
  wire::UploadMessage message_;
  std::optional<LayerStreamDecoder> decoder_;
  bool authenticated_ = false;
  std::shared_ptr<std::atomic<bool>> cancelled_ =
      std::make_shared<std::atomic<bool>>(false);
  std::string id_;
  int64_t round_ = 0;
  int64_t num_samples_ = 0;
  // receive_to_disk: the file being written (removed unless finished) and
  // the update's layers without their values.
  std::unique_ptr<SpillWriter> disk_;
  std::vector<LayerDelta> on_disk_;
  std::map<std::string, double> scores_;  // the manifest's, by layer
  ClientUsage usage_;
  int64_t wire_bytes_ = 0;
  TransferRecord record_;
};

// Receives one masked update: the header, then every layer's values in
// order, in chunks no larger than the run's max chunk bytes.
class MaskedReactor : public grpc::ServerReadReactor<wire::MaskedMessage> {
 public:
  MaskedReactor(CoordinatorServerImpl* service,
                grpc::CallbackServerContext* context, wire::UploadReply* reply)
      : service_(service), reply_(reply) {
    service_->OpenStream(this, context);
    StartRead(&message_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      EndOfStream();
      return;
    }
    wire_bytes_ += WireBytes(message_);
    absl::Status s = started_ ? Chunk() : Start();
    if (!s.ok()) {
      Refuse(s);
      return;
    }
    StartRead(&message_);
  }

  void OnDone() override {
    service_->CloseStream(this);
    delete this;
  }

 private:
  absl::Status Start() {
    if (!message_.has_header()) {
      return BadRequest("a masked upload must start with its header");
    }
    const wire::MaskedHeader& h = message_.header();
    input_.id = h.client_id();
    input_.round = h.round();
    if (service_->stopping()) return ShuttingDown();
    RETURN_IF_ERROR(service_->CheckSession(h.client_id(), h.session()));
    int64_t largest = 0, total = 0;
    for (const LayerLayout& l : service_->layouts()) {
      largest = std::max(largest, l.numel);
      total += l.numel;
    }
    if (h.layer_sizes_size() > static_cast<int>(service_->layouts().size())) {
      return BadRequest("a masked upload with more layers than the model");
    }
    int64_t sum = 0;
    for (int64_t n : h.layer_sizes()) {
      if (n < 0 || n > largest) {
        return BadRequest(absl::StrCat("a masked layer of ", n, " values"));
      }
      sum += n;
    }
    if (sum > total) return BadRequest("a masked upload larger than the model");
    RETURN_IF_ERROR(service_->AdmitUpload(
        this, input_.id, input_.round, /*masked=*/true,
        sum * static_cast<int64_t>(sizeof(uint32_t))));
    sizes_.assign(h.layer_sizes().begin(), h.layer_sizes().end());
    input_.layers.resize(sizes_.size());
    for (size_t i = 0; i < sizes_.size(); ++i)
      input_.layers[i].reserve(sizes_[i]);
    if (h.train_s() > 0) usage_.train_s = h.train_s();
    if (h.peak_bytes() > 0) usage_.peak_bytes = h.peak_bytes();
    TakeDevice(h, usage_);
    if (h.excluded_size() > 255) {
      return BadRequest("a masked upload excluding more than 255 peers");
    }
    input_.excluded.assign(h.excluded().begin(), h.excluded().end());
    started_ = true;
    return absl::OkStatus();
  }

  absl::Status Chunk() {
    if (!message_.has_chunk()) return BadRequest("a second masked header");
    const wire::MaskedChunk& c = message_.chunk();
    if (c.layer() < 0 || c.layer() >= static_cast<int>(sizes_.size())) {
      return BadRequest(absl::StrCat("a masked chunk of layer ", c.layer()));
    }
    std::vector<uint32_t>& layer = input_.layers[c.layer()];
    if (c.offset() != static_cast<int64_t>(layer.size()) ||
        static_cast<int64_t>(layer.size()) + c.values_size() >
            sizes_[c.layer()]) {
      return BadRequest(absl::StrCat("a masked chunk of layer ", c.layer(),
                                     " at offset ", c.offset(),
                                     " out of order or past its end"));
    }
    if (static_cast<int64_t>(c.values_size()) * 4 >
        service_->options().max_chunk_bytes) {
      return BadRequest("a masked chunk above the max chunk bytes");
    }
    layer.insert(layer.end(), c.values().begin(), c.values().end());
    return absl::OkStatus();
  }

  void EndOfStream() {
    service_->StreamRead(this);
    if (!started_) {
      Refuse(BadRequest("a masked upload without a header"));
      return;
    }
    for (size_t i = 0; i < sizes_.size(); ++i) {
      if (static_cast<int64_t>(input_.layers[i].size()) != sizes_[i]) {
        Refuse(BadRequest(absl::StrCat("masked layer ", i, " is truncated")));
        return;
      }
    }
    const int64_t wire_bytes = wire_bytes_;
    service_->SubmitMaskedInput(
        std::move(input_), usage_, wire_bytes,
        [this, wire_bytes](const absl::Status& s) {
          reply_->set_bytes_received(static_cast<uint64_t>(wire_bytes));
          End(ToGrpc(s));
        });
  }

  void Refuse(const absl::Status& s) {
    service_->CountRefusal("upload", input_.id.empty() ? "?" : input_.id, s);
    End(ToGrpc(s));
  }

  // Finishes the call; the stream's place (one per session, its bytes in
  // flight) is free before the client hears the answer.
  void End(const grpc::Status& status) {
    service_->CloseStream(this);
    Finish(status);
  }

  CoordinatorServerImpl* service_;
  wire::UploadReply* reply_;
  wire::MaskedMessage message_;
  bool started_ = false;
  std::vector<int64_t> sizes_;
  SecAggMaskedInput input_;
  ClientUsage usage_;
  int64_t wire_bytes_ = 0;
};

grpc::ServerReadReactor<wire::MaskedMessage>*
CoordinatorServerImpl::UploadMasked(grpc::CallbackServerContext* context,
                                    wire::UploadReply* reply) {
  return new MaskedReactor(this, context, reply);
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* CoordinatorServerImpl::FetchLayers(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request) {
  return new FetchReactor(this, context, request);
}

grpc::ServerReadReactor<wire::UploadMessage>*
CoordinatorServerImpl::UploadUpdate(grpc::CallbackServerContext* context,
                                    wire::UploadReply* reply) {
  return new UploadReactor(this, context, reply);
}

}  // namespace

absl::Status ServiceOptions::Validate() const {
  if (receive_to_disk && spill_dir.empty()) {
    return absl::InvalidArgumentError(
        "receive_to_disk: needs a spill_dir to write the updates to");
  }
  if (chunk_bytes < 4 || chunk_bytes > kMaxChunkLimit) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunk_bytes: must be in [4, ", kMaxChunkLimit, "], got ",
                     chunk_bytes));
  }
  if (max_chunk_bytes < 4 || max_chunk_bytes > kMaxChunkLimit) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_chunk_bytes: must be in [4, ", kMaxChunkLimit,
                     "], got ", max_chunk_bytes));
  }
  for (const auto& [name, d] :
       {std::pair<const char*, absl::Duration>{"max_poll", max_poll},
        {"client_timeout", client_timeout},
        {"heartbeat", heartbeat},
        {"tick", tick},
        {"linger", linger}}) {
    if (d <= absl::ZeroDuration()) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": must be > 0, got ", absl::FormatDuration(d)));
    }
  }
  if (max_uploads_in_flight < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_uploads_in_flight: must be >= 0, got ",
                     max_uploads_in_flight));
  }
  if (max_upload_bytes_in_flight < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_upload_bytes_in_flight: must be >= 1, got ",
                     max_upload_bytes_in_flight));
  }
  if (grpc_memory_bytes < (int64_t{16} << 20)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "grpc_memory_bytes: must be >= 16 MiB, got ", grpc_memory_bytes));
  }
  if (stream_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("stream_timeout: must be > 0, got ",
                     absl::FormatDuration(stream_timeout)));
  }
  if (max_held_bytes < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_held_bytes: must be >= 0, got ", max_held_bytes));
  }
  if (wait_for_clients < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("wait_for_clients: must be >= 0, got ", wait_for_clients));
  }
  if (run_id.empty()) return absl::InvalidArgumentError("run_id: must be set");
  if (!token.empty() && !client_tokens.empty()) {
    return absl::InvalidArgumentError(
        "token, client_tokens: a shared token and per-client tokens are "
        "exclusive");
  }
  for (const auto& [id, t] : client_tokens) {
    if (id.empty() || t.empty()) {
      return absl::InvalidArgumentError(
          "client_tokens: ids and tokens must be non-empty");
    }
  }
  if (tls.cert_pem.empty() != tls.key_pem.empty()) {
    return absl::InvalidArgumentError(
        "tls: the certificate and the key go together");
  }
  if (!tls.client_ca_pem.empty() && tls.cert_pem.empty()) {
    return absl::InvalidArgumentError(
        "tls.client_ca_pem: mutual TLS needs the server certificate and key");
  }
  return absl::OkStatus();
}

absl::Status CheckListenSecurity(const std::string& address,
                                 const ServiceOptions& options) {
  if (options.insecure || !options.token.empty() ||
      !options.client_tokens.empty() || !options.tls.client_ca_pem.empty()) {
    return absl::OkStatus();
  }
  if (absl::StartsWith(address, "unix:")) return absl::OkStatus();
  std::string host = address.substr(0, address.rfind(':'));
  if (absl::StartsWith(host, "[") && absl::EndsWith(host, "]")) {
    host = host.substr(1, host.size() - 2);
  }
  // An address literal in 127.0.0.0/8 or ::1 (a host name is not trusted
  // to resolve there, but "localhost").
  in_addr v4{};
  in6_addr v6{};
  if (host == "localhost" ||
      (inet_pton(AF_INET, host.c_str(), &v4) == 1 &&
       (ntohl(v4.s_addr) >> 24) == 127) ||
      (inet_pton(AF_INET6, host.c_str(), &v6) == 1 &&
       IN6_IS_ADDR_LOOPBACK(&v6))) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "listen: '", address,
      "' is reachable beyond this machine and nothing authenticates the "
      "clients: give per-client tokens (--tokens_file) or a shared one "
      "(--token_file), or mutual TLS (--tls_cert, --tls_key, "
      "--tls_client_ca); or listen on 127.0.0.1; --insecure serves anyone "
      "who reaches the port"));
}


absl::StatusOr<std::unique_ptr<CoordinatorServer>> CoordinatorServer::Start(
    const std::string& address, const ServiceOptions& options,
    ServiceDeps deps) {
  RETURN_IF_ERROR(options.Validate());
  RETURN_IF_ERROR(CheckListenSecurity(address, options));
  if (deps.engine == nullptr || deps.clock == nullptr || !deps.budget) {
    return absl::InvalidArgumentError(
        "coordinator server: engine, clock and budget are required");
  }
  if (!options.spill_dir.empty()) {
    // Held updates of an earlier process belong to a round that restarts.
    std::error_code ec;
    std::filesystem::create_directories(options.spill_dir, ec);
    if (ec) {
      return absl::Status(absl::ErrnoToStatusCode(ec.value()),
                          absl::StrCat("spill_dir: cannot create ",
                                       options.spill_dir, ": ", ec.message()));
    }
    for (std::filesystem::directory_iterator it(options.spill_dir, ec), end;
         !ec && it != end; it.increment(ec)) {
      const std::string name = it->path().filename().string();
      std::error_code ignored;
      if (absl::StartsWith(name, "held-") && absl::EndsWith(name, ".bin")) {
        std::filesystem::remove(it->path(), ignored);
      }
    }
  }
  auto server =
      std::make_unique<CoordinatorServerImpl>(options, std::move(deps));
  RETURN_IF_ERROR(server->Listen(address));
  return std::unique_ptr<CoordinatorServer>(std::move(server));
}

}  // namespace layerfl

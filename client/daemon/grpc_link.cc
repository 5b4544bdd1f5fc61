#include "client/daemon/grpc_link.h"

#include <algorithm>
#include <map>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/util/status_macros.h"
#include "grpcpp/grpcpp.h"
#include "proto/layerfl.grpc.pb.h"
#include "proto/wire_convert.h"

namespace layerfl {
namespace {

namespace wire = ::layerfl::wire::v1;

void SetDeadline(grpc::ClientContext& context, absl::Duration timeout) {
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
}

absl::Status BadStream(const std::string& detail) {
  return absl::DataLossError(absl::StrCat("bad_request: ", detail));
}

// Cancels a call when its deadline passes. The deadline moves while the call
// runs (a download's follows the bytes its manifest announces and each chunk
// that arrives), which a ClientContext's own deadline cannot.
class CallWatchdog {
 public:
  CallWatchdog(grpc::ClientContext* context, absl::Time deadline)
      : context_(context), deadline_(deadline), thread_([this] { Watch(); }) {}
  ~CallWatchdog() {
    {
      absl::MutexLock lock(&mu_);
      done_ = true;
    }
    thread_.join();
  }
  void SetDeadline(absl::Time deadline) {
    absl::MutexLock lock(&mu_);
    deadline_ = deadline;
  }
  // Whether it cancelled the call.
  bool fired() {
    absl::MutexLock lock(&mu_);
    return fired_;
  }

 private:
  void Watch() {
    absl::MutexLock lock(&mu_);
    while (!done_) {
      if (mu_.AwaitWithDeadline(absl::Condition(&done_), deadline_)) break;
      if (absl::Now() >= deadline_) {
        fired_ = true;
        context_->TryCancel();
        break;
      }
    }
  }

  grpc::ClientContext* const context_;
  absl::Mutex mu_;
  absl::Time deadline_ ABSL_GUARDED_BY(mu_);
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  bool fired_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;  // last: starts once the rest is set
};

class GrpcLink : public CoordinatorLink {
 public:
  explicit GrpcLink(const GrpcLinkOptions& options) : options_(options) {
    Connect(options.own_connection);
  }

  // A new channel. After the coordinator restarted, a channel that failed to
  // connect through it was seen to fail TLS handshakes for minutes while a
  // new process connected at once; `fresh_subchannels` then gives the new
  // channel its own connections instead of the process-wide pool's.
  void Connect(bool fresh_subchannels) ABSL_LOCKS_EXCLUDED(stub_mu_) {
    const GrpcLinkOptions& options = options_;
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(
        static_cast<int>(options.max_chunk_bytes + (64 << 10)));
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 200);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
                static_cast<int>(
                    absl::ToInt64Milliseconds(options.reconnect_backoff_max)));
    if (fresh_subchannels) {
      args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    }
    std::shared_ptr<grpc::ChannelCredentials> credentials =
        grpc::InsecureChannelCredentials();
    if (options.tls.enabled) {
      grpc::SslCredentialsOptions ssl;
      ssl.pem_root_certs = options.tls.ca_pem;
      ssl.pem_private_key = options.tls.key_pem;
      ssl.pem_cert_chain = options.tls.cert_pem;
      credentials = grpc::SslCredentials(ssl);
      if (!options.tls.server_name.empty()) {
        args.SetSslTargetNameOverride(options.tls.server_name);
      }
    }
    std::shared_ptr<wire::Coordinator::Stub> stub = wire::Coordinator::NewStub(
        grpc::CreateCustomChannel(options.target, credentials, args));
    absl::MutexLock lock(&stub_mu_);
    stub_ = std::move(stub);
  }

  std::shared_ptr<wire::Coordinator::Stub> Stub() ABSL_LOCKS_EXCLUDED(stub_mu_) {
    absl::MutexLock lock(&stub_mu_);
    return stub_;
  }

  absl::StatusOr<std::string> GetRunConfig(const std::string& client_id,
                                           const std::string& token) override {
    wire::RunConfigRequest request;
    request.set_client_id(client_id);
    request.set_token(token);
    wire::RunConfigReply reply;
    grpc::ClientContext context;
    SetDeadline(context, options_.rpc_timeout);
    RETURN_IF_ERROR(Checked(Stub()->GetRunConfig(&context, request, &reply)));
    return reply.config_yaml();
  }

  absl::StatusOr<JoinInfo> Join(const JoinParams& params) override {
    wire::JoinRequest request;
    request.set_client_id(params.client_id);
    request.set_token(params.token);
    request.set_budget(params.budget);
    request.set_num_samples(params.num_samples);
    if (params.profile != nullptr)
      ToProto(*params.profile, request.mutable_profile());
    request.set_max_time_s(params.max_time_s);
    request.set_max_memory_mb(params.max_memory_mb);
    wire::JoinReply reply;
    grpc::ClientContext context;
    SetDeadline(context, options_.rpc_timeout);
    RETURN_IF_ERROR(Checked(Stub()->Join(&context, request, &reply)));
    JoinInfo info;
    info.run_id = reply.run_id();
    ASSIGN_OR_RETURN(info.encoding, FromProto(reply.encoding()));
    info.max_chunk_bytes = static_cast<int64_t>(reply.max_chunk_bytes());
    info.heartbeat = absl::Milliseconds(reply.heartbeat_ms());
    info.budget = reply.budget();
    absl::MutexLock lock(&mu_);
    id_ = params.client_id;
    session_ = reply.session();
    encoding_ = info.encoding;
    upload_chunk_ = std::max<int64_t>(
        4, std::min<int64_t>(options_.chunk_bytes, info.max_chunk_bytes));
    return info;
  }

  absl::Status Leave(const std::string& reason) override {
    wire::LeaveRequest request;
    request.set_reason(reason);
    Identify(request);
    wire::LeaveReply reply;
    grpc::ClientContext context;
    SetDeadline(context, options_.rpc_timeout);
    return Checked(Stub()->Leave(&context, request, &reply));
  }

  absl::Status Heartbeat() override {
    wire::HeartbeatRequest request;
    Identify(request);
    wire::HeartbeatReply reply;
    grpc::ClientContext context;
    SetDeadline(context, options_.rpc_timeout);
    return Checked(Stub()->Heartbeat(&context, request, &reply));
  }

  absl::StatusOr<ClientTask> GetTask(absl::Duration wait) override {
    wire::GetTaskRequest request;
    Identify(request);
    request.set_wait_ms(absl::ToInt64Milliseconds(wait));
    wire::TaskReply reply;
    grpc::ClientContext context;
    SetDeadline(context, wait + options_.rpc_timeout);
    RETURN_IF_ERROR(Checked(Stub()->GetTask(&context, request, &reply)));
    ClientTask task;
    switch (reply.kind()) {
      case wire::TaskReply::SCORE:
        task.kind = ClientTaskKind::kScore;
        break;
      case wire::TaskReply::TRAIN:
        task.kind = ClientTaskKind::kTrain;
        break;
      case wire::TaskReply::FINISHED:
        task.kind = ClientTaskKind::kFinished;
        break;
      case wire::TaskReply::ADVERTISE:
        task.kind = ClientTaskKind::kAdvertise;
        break;
      case wire::TaskReply::SHARE_KEYS: {
        task.kind = ClientTaskKind::kShareKeys;
        absl::StatusOr<SecAggRoster> roster = FromProto(reply.roster());
        if (!roster.ok()) return roster.status();
        task.roster = std::make_shared<const SecAggRoster>(std::move(*roster));
        break;
      }
      case wire::TaskReply::UNMASK:
        task.kind = ClientTaskKind::kUnmask;
        task.unmask = std::make_shared<const SecAggUnmaskRequest>(
            FromProto(reply.unmask()));
        break;
      default:
        task.kind = ClientTaskKind::kWait;
        break;
    }
    task.round = reply.round();
    task.layers.assign(reply.layers().begin(), reply.layers().end());
    task.layer_participants.assign(reply.layer_participants().begin(),
                                   reply.layer_participants().end());
    for (const wire::SecAggShare& s : reply.shares()) {
      task.shares.push_back(FromProto(s));
    }
    task.time_left = absl::Milliseconds(reply.deadline_ms());
    task.metric = reply.metric();
    task.score_from = reply.score_from();
    return task;
  }

  absl::StatusOr<TransferStats> Fetch(Replica& replica,
                                      LayerCache* cache) override {
    wire::FetchRequest request;
    Identify(request);
    if (!replica.run_id.empty()) {
      request.set_run_id(replica.run_id);
      for (const LayerWeights& l : replica.weights.layers) {
        wire::LayerVersion* v = request.add_held();
        v->set_layer(l.group);
        v->set_version(l.version);
      }
    } else if (!replica.partial.empty()) {
      request.set_run_id(replica.partial_run_id);
      for (const auto& [name, l] : replica.partial) {
        wire::LayerVersion* v = request.add_held();
        v->set_layer(name);
        v->set_version(l.version);
      }
    }
    grpc::ClientContext context;
    // The manifest must come within rpc_timeout; then the deadline follows
    // the bytes it announces, and a stall of rpc_timeout ends the call.
    const absl::Time start = absl::Now();
    CallWatchdog watchdog(&context, start + options_.rpc_timeout);
    std::unique_ptr<grpc::ClientReader<wire::FetchReply>> reader =
        Stub()->FetchLayers(&context, request);
    TransferStats stats;
    wire::FetchReply message;
    absl::Time transfer_deadline = absl::InfiniteFuture();
    const auto finished = [&](grpc::Status status) -> absl::Status {
      if (watchdog.fired()) {
        return absl::DeadlineExceededError(absl::StrCat(
            "the download stalled or ran past its deadline (",
            stats.payload_bytes, " bytes in ",
            absl::FormatDuration(absl::Trunc(absl::Now() - start,
                                             absl::Milliseconds(1))),
            "; allowed: ", absl::FormatDuration(options_.rpc_timeout),
            " without progress, ",
            options_.min_download_bytes_per_s, " bytes/s on average)"));
      }
      return Checked(status);
    };
    const auto fail = [&](absl::Status s) {
      context.TryCancel();
      (void)reader->Finish();
      return s;
    };
    if (!reader->Read(&message)) {
      RETURN_IF_ERROR(finished(reader->Finish()));
      return BadStream("FetchLayers ended before its manifest");
    }
    if (!message.has_manifest()) {
      return fail(BadStream("FetchLayers must start with its manifest"));
    }
    stats.wire_bytes += WireBytes(message);
    const wire::FetchManifest manifest = message.manifest();
    absl::StatusOr<Encoding> encoding = FromProto(manifest.encoding());
    if (!encoding.ok()) return fail(encoding.status());
    if (manifest.sending_bytes() < 0) {
      return fail(BadStream("a negative sending_bytes in the manifest"));
    }
    transfer_deadline =
        absl::Now() + options_.rpc_timeout +
        absl::Seconds(static_cast<double>(manifest.sending_bytes()) /
                      options_.min_download_bytes_per_s);
    watchdog.SetDeadline(
        std::min(transfer_deadline, absl::Now() + options_.rpc_timeout));
    const bool fresh = manifest.run_id() != replica.run_id;
    if (fresh && replica.partial_run_id != manifest.run_id()) {
      replica.partial.clear();
      replica.partial_run_id = manifest.run_id();
    }
    std::map<std::string, int> index;  // the replica's layers
    if (!fresh) {
      for (size_t l = 0; l < replica.weights.layers.size(); ++l) {
        index[replica.weights.layers[l].group] = static_cast<int>(l);
      }
    }
    std::map<std::string, int64_t> current;  // the manifest's versions
    std::vector<std::string> known;
    for (const wire::LayerVersion& v : manifest.current()) {
      current[v.layer()] = v.version();
      known.push_back(v.layer());
    }
    std::vector<ExpectedLayer> expected;
    for (const std::string& name : manifest.sending()) {
      ExpectedLayer e;
      e.layer = name;
      auto it = index.find(name);
      if (it != index.end()) {
        const LayerWeights& held = replica.weights.layers[it->second];
        e.layout = LayoutOf(held.group, held.tensors);
      }
      expected.push_back(std::move(e));
    }
    if (!fresh && static_cast<size_t>(manifest.current_size()) !=
                      replica.weights.layers.size()) {
      return fail(BadStream("the model's layers changed within one run"));
    }
    DecoderLimits limits;
    limits.encoding = *encoding;
    limits.max_chunk_bytes = options_.max_chunk_bytes;
    LayerStreamDecoder decoder(std::move(expected), known, limits);
    // Keeps each layer that arrived whole: in the replica (a first download:
    // its partial part) and in the cache.
    const auto keep_completed = [&]() -> absl::Status {
      for (LayerWeights& l : decoder.TakeCompleted()) {
        auto v = current.find(l.group);
        if (v == current.end() || v->second != l.version) {
          return BadStream(absl::StrCat(
              "layer '", l.group, "' came as version ", l.version,
              ", the manifest says ",
              v == current.end() ? std::string("nothing") :
                                   absl::StrCat(v->second)));
        }
        stats.layers.push_back(l.group);
        stats.numel += l.numel();
        if (cache != nullptr && stats.cache_error.empty()) {
          absl::Status s = cache->Put(manifest.run_id(), l);
          if (!s.ok()) stats.cache_error = std::string(s.message());
        }
        if (fresh) {
          const std::string name = l.group;
          replica.partial[name] = std::move(l);
        } else {
          replica.weights.layers[index[l.group]] = std::move(l);
        }
      }
      return absl::OkStatus();
    };
    while (reader->Read(&message)) {
      if (!message.has_chunk()) {
        (void)keep_completed();
        return fail(BadStream("a second manifest in FetchLayers"));
      }
      stats.wire_bytes += WireBytes(message);
      absl::Status s = AddChunk(message.chunk(), decoder);
      if (s.ok()) s = keep_completed();
      if (!s.ok()) return fail(s);
      watchdog.SetDeadline(
          std::min(transfer_deadline, absl::Now() + options_.rpc_timeout));
    }
    absl::Status status = finished(reader->Finish());
    if (status.ok()) status = decoder.Finish();
    if (absl::Status kept = keep_completed(); status.ok()) status = kept;
    stats.payload_bytes = decoder.payload_bytes();
    if (!status.ok()) return status;
    // Check that the result is the coordinator's current model, then use it.
    for (int l = 0; l < manifest.current_size(); ++l) {
      const wire::LayerVersion& v = manifest.current(l);
      const LayerWeights* held = nullptr;
      if (fresh) {
        auto it = replica.partial.find(v.layer());
        if (it != replica.partial.end()) held = &it->second;
      } else if (replica.weights.layers[l].group == v.layer()) {
        held = &replica.weights.layers[l];
      }
      if (held == nullptr || held->version != v.version()) {
        return BadStream(absl::StrCat("layer '", v.layer(), "' version ",
                                      v.version(),
                                      " was not sent and is not held"));
      }
    }
    if (fresh) {
      stats.resumed_layers =
          manifest.current_size() - manifest.sending_size();
      ModelWeights weights;
      for (const wire::LayerVersion& v : manifest.current()) {
        weights.layers.push_back(std::move(replica.partial[v.layer()]));
      }
      replica.weights = std::move(weights);
      replica.partial.clear();
      replica.partial_run_id.clear();
    }
    replica.run_id = manifest.run_id();
    replica.committed_round = manifest.committed_round();
    return stats;
  }

  absl::Status ReportScores(int64_t round, const std::vector<double>& scores,
                            const WorkCost& cost) override {
    wire::ScoresRequest request;
    Identify(request);
    request.set_round(round);
    request.set_scoring_s(cost.seconds);
    request.set_scoring_peak_bytes(cost.peak_bytes);
    for (double s : scores) request.add_scores(s);
    wire::ScoresReply reply;
    grpc::ClientContext context;
    SetDeadline(context, options_.rpc_timeout);
    return Checked(Stub()->ReportScores(&context, request, &reply));
  }

  absl::StatusOr<TransferStats> Upload(int64_t round, int64_t num_samples,
                                       const std::vector<LayerDelta>& update,
                                       absl::Duration time_left,
                                       const WorkCost& cost) override {
    Encoding encoding;
    int64_t chunk;
    wire::UploadMessage message;
    {
      absl::MutexLock lock(&mu_);
      encoding = encoding_;
      chunk = upload_chunk_;
      wire::UploadManifest* m = message.mutable_manifest();
      m->set_client_id(id_);
      m->set_session(session_);
      m->set_round(round);
      m->set_num_samples(num_samples);
      m->set_encoding(ToProto(encoding));
      m->set_train_s(cost.seconds);
      m->set_peak_bytes(cost.peak_bytes);
      m->set_process_peak_bytes(cost.process_peak_bytes);
      m->set_memory_limit_bytes(cost.memory_limit_bytes);
      m->set_cpus(cost.cpus);
      for (const LayerDelta& d : update) m->add_layers(d.group);
      if (!update.empty() && update.front().score >= 0) {
        for (const LayerDelta& d : update) m->add_scores(d.score);
      }
    }
    grpc::ClientContext context;
    SetDeadline(context, std::max(options_.rpc_timeout,
                                  time_left + options_.rpc_timeout));
    wire::UploadReply reply;
    std::unique_ptr<grpc::ClientWriter<wire::UploadMessage>> writer =
        Stub()->UploadUpdate(&context, &reply);
    TransferStats stats;
    std::vector<LayerSource> sources;
    for (const LayerDelta& d : update) {
      sources.push_back(SourceOf(d));
      stats.layers.push_back(d.group);
      for (const Tensor32& t : d.tensors) stats.numel += t.numel();
    }
    LayerStreamEncoder encoder(std::move(sources), encoding, chunk,
                               /*with_specs=*/false);
    stats.payload_bytes = encoder.payload_bytes();
    stats.wire_bytes += WireBytes(message);
    bool open = writer->Write(message);
    ChunkFrame frame;
    while (open && encoder.Next(&frame)) {
      ToProto(std::move(frame), message.mutable_chunk());
      stats.wire_bytes += WireBytes(message);
      open = writer->Write(message);
    }
    if (open) writer->WritesDone();
    RETURN_IF_ERROR(Checked(writer->Finish()));
    return stats;
  }

  absl::Status SendAdvert(int64_t round, const SecAggAdvert& advert) override {
    wire::SecAggStepRequest request;
    ToProto(advert, request.mutable_advert());
    return Step(round, request);
  }

  absl::Status SendShares(int64_t round,
                          const std::vector<SecAggShare>& shares) override {
    wire::SecAggStepRequest request;
    for (const SecAggShare& s : shares) {
      ToProto(s, request.mutable_shares()->add_shares());
    }
    return Step(round, request);
  }

  absl::Status SendUnmask(int64_t round,
                          const SecAggUnmaskResponse& response) override {
    wire::SecAggStepRequest request;
    ToProto(response, request.mutable_unmask());
    return Step(round, request);
  }

  absl::StatusOr<TransferStats> UploadMasked(int64_t round,
                                             const SecAggMaskedInput& input,
                                             absl::Duration time_left,
                                             const WorkCost& cost) override {
    int64_t chunk;
    wire::MaskedMessage message;
    {
      absl::MutexLock lock(&mu_);
      chunk = upload_chunk_;
      wire::MaskedHeader* h = message.mutable_header();
      h->set_client_id(id_);
      h->set_session(session_);
      h->set_round(round);
      h->set_train_s(cost.seconds);
      h->set_peak_bytes(cost.peak_bytes);
      h->set_process_peak_bytes(cost.process_peak_bytes);
      h->set_memory_limit_bytes(cost.memory_limit_bytes);
      h->set_cpus(cost.cpus);
      for (const std::vector<uint32_t>& l : input.layers) {
        h->add_layer_sizes(static_cast<int64_t>(l.size()));
      }
      for (const std::string& id : input.excluded) h->add_excluded(id);
    }
    grpc::ClientContext context;
    SetDeadline(context, std::max(options_.rpc_timeout,
                                  time_left + options_.rpc_timeout));
    wire::UploadReply reply;
    std::unique_ptr<grpc::ClientWriter<wire::MaskedMessage>> writer =
        Stub()->UploadMasked(&context, &reply);
    TransferStats stats;
    stats.wire_bytes += WireBytes(message);
    bool open = writer->Write(message);
    const size_t per_chunk = std::max<int64_t>(1, chunk / 4);
    for (size_t l = 0; open && l < input.layers.size(); ++l) {
      const std::vector<uint32_t>& values = input.layers[l];
      stats.numel += static_cast<int64_t>(values.size());
      stats.payload_bytes += static_cast<int64_t>(values.size() * 4);
      for (size_t at = 0; open && at < values.size(); at += per_chunk) {
        const size_t n = std::min(per_chunk, values.size() - at);
        message.Clear();
        wire::MaskedChunk* c = message.mutable_chunk();
        c->set_layer(static_cast<int32_t>(l));
        c->set_offset(static_cast<int64_t>(at));
        c->mutable_values()->Add(values.begin() + at, values.begin() + at + n);
        stats.wire_bytes += WireBytes(message);
        open = writer->Write(message);
      }
    }
    if (open) writer->WritesDone();
    RETURN_IF_ERROR(Checked(writer->Finish()));
    return stats;
  }

 private:
  absl::Status Step(int64_t round, wire::SecAggStepRequest& request) {
    Identify(request);
    request.set_round(round);
    wire::SecAggStepReply reply;
    grpc::ClientContext context;
    SetDeadline(context, options_.rpc_timeout);
    return Checked(Stub()->SecAggStep(&context, request, &reply));
  }

  template <typename Request>
  void Identify(Request& request) {
    absl::MutexLock lock(&mu_);
    request.set_client_id(id_);
    request.set_session(session_);
  }

  // The call's status as an absl::Status. gRPC reports a refused TLS
  // handshake (untrusted or missing certificate, wrong server name) to the
  // caller only as "failed to connect"; with TLS on, say so.
  absl::Status Checked(const grpc::Status& status) {
    absl::Status s = FromGrpc(status);
    const bool unreachable = s.code() == absl::StatusCode::kUnavailable &&
                             absl::StrContains(s.message(), "failed to connect");
    bool reconnect = false;
    {
      absl::MutexLock lock(&stub_mu_);
      const absl::Time now = absl::Now();
      if (!unreachable) {
        unreachable_since_ = absl::InfiniteFuture();
      } else if (unreachable_since_ == absl::InfiniteFuture()) {
        unreachable_since_ = now;
      } else if (now - unreachable_since_ >
                 std::max(absl::Seconds(10), 2 * options_.reconnect_backoff_max)) {
        unreachable_since_ = absl::InfiniteFuture();
        reconnect = true;
      }
    }
    if (reconnect) Connect(/*fresh_subchannels=*/true);
    if (options_.tls.enabled && s.code() == absl::StatusCode::kUnavailable &&
        absl::StrContains(s.message(), "failed to connect")) {
      return absl::UnavailableError(absl::StrCat(
          s.message(),
          " [TLS is on: a refused handshake looks like this too; check "
          "--tls_ca, --tls_cert/--tls_key and --tls_server_name; gRPC's "
          "\"Handshake failed\" log line here or on the coordinator names the "
          "cause]"));
    }
    return s;
  }

  const GrpcLinkOptions options_;
  absl::Mutex stub_mu_;
  std::shared_ptr<wire::Coordinator::Stub> stub_ ABSL_GUARDED_BY(stub_mu_);
  // When calls began failing to connect; InfiniteFuture while they do not.
  absl::Time unreachable_since_ ABSL_GUARDED_BY(stub_mu_) =
      absl::InfiniteFuture();
  absl::Mutex mu_;
  std::string id_ ABSL_GUARDED_BY(mu_);
  std::string session_ ABSL_GUARDED_BY(mu_);
  Encoding encoding_ ABSL_GUARDED_BY(mu_) = Encoding::kFloat32;
  int64_t upload_chunk_ ABSL_GUARDED_BY(mu_) = int64_t{1} << 20;
};

}  // namespace

std::unique_ptr<CoordinatorLink> CreateGrpcLink(
    const GrpcLinkOptions& options) {
  return std::make_unique<GrpcLink>(options);
}

}  // namespace layerfl

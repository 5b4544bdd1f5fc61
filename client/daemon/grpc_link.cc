#include "client/daemon/grpc_link.h"

#include <map>

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

class GrpcLink : public CoordinatorLink {
 public:
  explicit GrpcLink(const GrpcLinkOptions& options) : options_(options) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(
        static_cast<int>(options.max_chunk_bytes + (64 << 10)));
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 200);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
                static_cast<int>(
                    absl::ToInt64Milliseconds(options.reconnect_backoff_max)));
    if (options.own_connection) {
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
    channel_ = grpc::CreateCustomChannel(options.target, credentials, args);
    stub_ = wire::Coordinator::NewStub(channel_);
  }

  absl::StatusOr<std::string> GetRunConfig(const std::string& client_id,
                                           const std::string& token) override {
    wire::RunConfigRequest request;
    request.set_client_id(client_id);
    request.set_token(token);
    wire::RunConfigReply reply;
    grpc::ClientContext context;
    SetDeadline(context, options_.rpc_timeout);
    RETURN_IF_ERROR(Checked(stub_->GetRunConfig(&context, request, &reply)));
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
    RETURN_IF_ERROR(Checked(stub_->Join(&context, request, &reply)));
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
    return Checked(stub_->Leave(&context, request, &reply));
  }

  absl::Status Heartbeat() override {
    wire::HeartbeatRequest request;
    Identify(request);
    wire::HeartbeatReply reply;
    grpc::ClientContext context;
    SetDeadline(context, options_.rpc_timeout);
    return Checked(stub_->Heartbeat(&context, request, &reply));
  }

  absl::StatusOr<ClientTask> GetTask(absl::Duration wait) override {
    wire::GetTaskRequest request;
    Identify(request);
    request.set_wait_ms(absl::ToInt64Milliseconds(wait));
    wire::TaskReply reply;
    grpc::ClientContext context;
    SetDeadline(context, wait + options_.rpc_timeout);
    RETURN_IF_ERROR(Checked(stub_->GetTask(&context, request, &reply)));
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

  absl::StatusOr<TransferStats> Fetch(Replica& replica) override {
    wire::FetchRequest request;
    Identify(request);
    request.set_run_id(replica.run_id);
    if (!replica.run_id.empty()) {
      for (const LayerWeights& l : replica.weights.layers) {
        wire::LayerVersion* v = request.add_held();
        v->set_layer(l.group);
        v->set_version(l.version);
      }
    }
    grpc::ClientContext context;
    SetDeadline(context, options_.transfer_timeout);
    std::unique_ptr<grpc::ClientReader<wire::FetchReply>> reader =
        stub_->FetchLayers(&context, request);
    TransferStats stats;
    wire::FetchReply message;
    const auto fail = [&](absl::Status s) {
      context.TryCancel();
      (void)reader->Finish();
      return s;
    };
    if (!reader->Read(&message)) {
      RETURN_IF_ERROR(Checked(reader->Finish()));
      return BadStream("FetchLayers ended before its manifest");
    }
    if (!message.has_manifest()) {
      return fail(BadStream("FetchLayers must start with its manifest"));
    }
    stats.wire_bytes += WireBytes(message);
    const wire::FetchManifest manifest = message.manifest();
    absl::StatusOr<Encoding> encoding = FromProto(manifest.encoding());
    if (!encoding.ok()) return fail(encoding.status());
    const bool fresh = manifest.run_id() != replica.run_id;
    std::map<std::string, int> index;  // the replica's layers
    if (!fresh) {
      for (size_t l = 0; l < replica.weights.layers.size(); ++l) {
        index[replica.weights.layers[l].group] = static_cast<int>(l);
      }
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
    std::vector<std::string> known;
    for (const wire::LayerVersion& v : manifest.current())
      known.push_back(v.layer());
    DecoderLimits limits;
    limits.encoding = *encoding;
    limits.max_chunk_bytes = options_.max_chunk_bytes;
    LayerStreamDecoder decoder(std::move(expected), known, limits);
    while (reader->Read(&message)) {
      if (!message.has_chunk()) {
        return fail(BadStream("a second manifest in FetchLayers"));
      }
      stats.wire_bytes += WireBytes(message);
      absl::Status s = AddChunk(message.chunk(), decoder);
      if (!s.ok()) return fail(s);
    }
    RETURN_IF_ERROR(Checked(reader->Finish()));
    RETURN_IF_ERROR(decoder.Finish());
    stats.payload_bytes = decoder.payload_bytes();
    std::vector<LayerWeights> received = decoder.TakeLayers();
    std::map<std::string, LayerWeights*> by_name;
    for (LayerWeights& l : received) {
      by_name[l.group] = &l;
      stats.layers.push_back(l.group);
      stats.numel += l.numel();
    }
    // Check that the result is the coordinator's current model, then apply.
    if (!fresh && static_cast<size_t>(manifest.current_size()) !=
                      replica.weights.layers.size()) {
      return BadStream("the model's layers changed within one run");
    }
    for (int l = 0; l < manifest.current_size(); ++l) {
      const wire::LayerVersion& v = manifest.current(l);
      auto it = by_name.find(v.layer());
      if (it != by_name.end()) {
        if (it->second->version != v.version()) {
          return BadStream(absl::StrCat(
              "layer '", v.layer(), "' came as version ", it->second->version,
              ", the manifest says ", v.version()));
        }
        continue;
      }
      if (fresh || replica.weights.layers[l].group != v.layer() ||
          replica.weights.layers[l].version != v.version()) {
        return BadStream(absl::StrCat("layer '", v.layer(), "' version ",
                                      v.version(),
                                      " was not sent and is not held"));
      }
    }
    if (fresh) {
      ModelWeights weights;
      for (const wire::LayerVersion& v : manifest.current()) {
        weights.layers.push_back(std::move(*by_name[v.layer()]));
      }
      replica.weights = std::move(weights);
    } else {
      for (LayerWeights& l : received) {
        replica.weights.layers[index[l.group]] = std::move(l);
      }
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
    return Checked(stub_->ReportScores(&context, request, &reply));
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
      for (const LayerDelta& d : update) m->add_layers(d.group);
    }
    grpc::ClientContext context;
    SetDeadline(context, std::max(options_.rpc_timeout,
                                  time_left + options_.rpc_timeout));
    wire::UploadReply reply;
    std::unique_ptr<grpc::ClientWriter<wire::UploadMessage>> writer =
        stub_->UploadUpdate(&context, &reply);
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
        stub_->UploadMasked(&context, &reply);
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
    return Checked(stub_->SecAggStep(&context, request, &reply));
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
  absl::Status Checked(const grpc::Status& status) const {
    absl::Status s = FromGrpc(status);
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
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<wire::Coordinator::Stub> stub_;
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

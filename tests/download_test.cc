// A client daemon's download (GrpcLink::Fetch) against a fake coordinator
// that misbehaves on purpose: a stream cut after some layers keeps the
// whole layers, and the next fetch declares them held and completes the
// model with the rest; a coordinator that stalls, or trickles slower than
// the minimum rate for the bytes it announced, is given up on in about the
// time the rules allow, not after a fixed timeout.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <memory>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "client/daemon/grpc_link.h"
#include "common/codec/codec.h"
#include "grpcpp/grpcpp.h"
#include "proto/layerfl.grpc.pb.h"
#include "proto/wire_convert.h"
#include "tests/weights_matchers.h"

namespace layerfl {
namespace {

namespace wire = ::layerfl::wire::v1;

LayerWeights Layer(const std::string& group, int64_t version, int n) {
  LayerWeights l;
  l.group = group;
  l.version = version;
  Tensor32 t{group + ".w", {n}, {}};
  for (int i = 0; i < n; ++i) t.values.push_back(0.25f * i + version);
  l.tensors.push_back(std::move(t));
  return l;
}

// Serves `model`; what each FetchLayers call does is set per test.
class FakeCoordinator final : public wire::Coordinator::Service {
 public:
  enum class Mode { kWhole, kCutAfter2, kStallAfterManifest, kTrickle };

  ModelWeights model;
  std::atomic<Mode> mode{Mode::kWhole};
  absl::Mutex mu;
  std::vector<std::map<std::string, int64_t>> requests ABSL_GUARDED_BY(mu);

  grpc::Status FetchLayers(grpc::ServerContext* context,
                           const wire::FetchRequest* request,
                           grpc::ServerWriter<wire::FetchReply>* writer)
      override {
    std::map<std::string, int64_t> held;
    for (const wire::LayerVersion& v : request->held())
      held[v.layer()] = v.version();
    {
      absl::MutexLock lock(&mu);
      requests.push_back(held);
    }
    wire::FetchReply reply;
    wire::FetchManifest* manifest = reply.mutable_manifest();
    manifest->set_run_id("run-1");
    manifest->set_committed_round(7);
    manifest->set_encoding(ToProto(Encoding::kFloat32));
    std::vector<LayerSource> sending;
    int64_t bytes = 0;
    for (const LayerWeights& l : model.layers) {
      wire::LayerVersion* v = manifest->add_current();
      v->set_layer(l.group);
      v->set_version(l.version);
      auto it = held.find(l.group);
      if (request->run_id() == "run-1" && it != held.end() &&
          it->second == l.version) {
        continue;
      }
      manifest->add_sending(l.group);
      sending.push_back(SourceOf(l));
      bytes += l.numel() * 4;
    }
    manifest->set_sending_bytes(bytes);
    writer->Write(reply);
    if (mode == Mode::kStallAfterManifest) {
      while (!context->IsCancelled()) absl::SleepFor(absl::Milliseconds(10));
      return grpc::Status::CANCELLED;
    }
    int layers_sent = 0;
    for (ChunkFrame& frame :
         EncodeLayers(sending, Encoding::kFloat32, 64, /*with_specs=*/true)) {
      const bool starts_layer = frame.header.has_value();
      if (starts_layer && mode == Mode::kCutAfter2 && layers_sent == 2) {
        return grpc::Status(grpc::StatusCode::UNAVAILABLE, "cut");
      }
      layers_sent += starts_layer;
      wire::FetchReply chunk;
      ToProto(std::move(frame), chunk.mutable_chunk());
      if (mode == Mode::kTrickle) absl::SleepFor(absl::Milliseconds(300));
      if (context->IsCancelled() || !writer->Write(chunk)) {
        return grpc::Status::CANCELLED;
      }
    }
    return grpc::Status::OK;
  }
};

class DownloadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int i = 0; i < 4; ++i) {
      fake_.model.layers.push_back(
          Layer(absl::StrCat("layer", i), /*version=*/i, /*n=*/40));
    }
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port_);
    builder.RegisterService(&fake_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
  }
  void TearDown() override { server_->Shutdown(); }

  std::unique_ptr<CoordinatorLink> Link(absl::Duration rpc_timeout,
                                        double min_rate) {
    GrpcLinkOptions options;
    options.target = absl::StrCat("127.0.0.1:", port_);
    options.rpc_timeout = rpc_timeout;
    options.min_download_bytes_per_s = min_rate;
    return CreateGrpcLink(options);
  }

  FakeCoordinator fake_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

// Stores what it is given, as a client's download cache would.
class RecordingCache : public LayerCache {
 public:
  absl::Status Put(const std::string& run_id,
                   const LayerWeights& layer) override {
    stored.push_back(absl::StrCat(run_id, "/", layer.group));
    return absl::OkStatus();
  }
  absl::StatusOr<Replica> Load() override { return Replica(); }
  std::vector<std::string> stored;
};

TEST_F(DownloadTest, ACutStreamKeepsWholeLayersAndTheNextFetchSendsTheRest) {
  std::unique_ptr<CoordinatorLink> link = Link(absl::Seconds(10), 1 << 20);
  Replica replica;
  RecordingCache cache;
  fake_.mode = FakeCoordinator::Mode::kCutAfter2;
  absl::StatusOr<TransferStats> first = link->Fetch(replica, &cache);
  ASSERT_FALSE(first.ok());
  EXPECT_EQ(first.status().code(), absl::StatusCode::kUnavailable)
      << first.status();
  EXPECT_TRUE(replica.run_id.empty());
  EXPECT_EQ(replica.partial_run_id, "run-1");
  ASSERT_EQ(replica.partial.size(), 2u);
  EXPECT_THAT(cache.stored,
              ::testing::ElementsAre("run-1/layer0", "run-1/layer1"));

  fake_.mode = FakeCoordinator::Mode::kWhole;
  absl::StatusOr<TransferStats> second = link->Fetch(replica, &cache);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->resumed_layers, 2);
  EXPECT_THAT(second->layers, ::testing::ElementsAre("layer2", "layer3"));
  EXPECT_EQ(second->payload_bytes, 2 * 40 * 4);
  EXPECT_EQ(replica.run_id, "run-1");
  EXPECT_EQ(replica.committed_round, 7);
  EXPECT_TRUE(replica.partial.empty());
  ExpectBitIdentical(replica.weights, fake_.model);
  {
    absl::MutexLock lock(&fake_.mu);
    ASSERT_EQ(fake_.requests.size(), 2u);
    EXPECT_TRUE(fake_.requests[0].empty());
    EXPECT_EQ(fake_.requests[1],
              (std::map<std::string, int64_t>{{"layer0", 0}, {"layer1", 1}}));
  }
  // Up to date: nothing to send.
  absl::StatusOr<TransferStats> third = link->Fetch(replica, &cache);
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_TRUE(third->layers.empty());
  EXPECT_EQ(third->resumed_layers, 0);
}

TEST_F(DownloadTest, AStalledDownloadEndsAfterTheStallTimeout) {
  std::unique_ptr<CoordinatorLink> link =
      Link(absl::Milliseconds(400), 1 << 20);
  Replica replica;
  fake_.mode = FakeCoordinator::Mode::kStallAfterManifest;
  const absl::Time start = absl::Now();
  absl::StatusOr<TransferStats> fetched = link->Fetch(replica, nullptr);
  const absl::Duration took = absl::Now() - start;
  ASSERT_FALSE(fetched.ok());
  EXPECT_EQ(fetched.status().code(), absl::StatusCode::kDeadlineExceeded)
      << fetched.status();
  EXPECT_THAT(fetched.status().message(), ::testing::HasSubstr("stalled"));
  EXPECT_GE(took, absl::Milliseconds(400));
  EXPECT_LT(took, absl::Seconds(3)) << took;
}

TEST_F(DownloadTest, ADownloadSlowerThanTheMinimumRateEndsAtItsDeadline) {
  // 640 bytes announced at a minimum of 400 bytes/s: 1 s + 1.6 s allowed.
  // The fake sends one chunk (64 bytes or a layer's last 32) every 300 ms,
  // never stalling for the 1 s stall timeout, but its 12 chunks would take
  // 3.6 s: given up after ~2.6 s, with the 2 layers that came whole kept.
  std::unique_ptr<CoordinatorLink> link = Link(absl::Seconds(1), 400);
  Replica replica;
  fake_.mode = FakeCoordinator::Mode::kTrickle;
  const absl::Time start = absl::Now();
  absl::StatusOr<TransferStats> fetched = link->Fetch(replica, nullptr);
  const absl::Duration took = absl::Now() - start;
  ASSERT_FALSE(fetched.ok());
  EXPECT_EQ(fetched.status().code(), absl::StatusCode::kDeadlineExceeded)
      << fetched.status();
  EXPECT_GE(took, absl::Seconds(2.5));
  EXPECT_LT(took, absl::Seconds(4.5)) << took;
  // Whole layers that arrived before the deadline were kept.
  EXPECT_FALSE(replica.partial.empty());
}

}  // namespace
}  // namespace layerfl

// The service's parts that are not the gRPC adapter: ordered aggregation's
// held uploads (memory, spill files, order, failures) and the encoded
// download snapshot (shared layers across commits, chunks carrying the
// values).

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"
#include "proto/layerfl.pb.h"
#include "proto/wire_convert.h"
#include "server/monitor/run_monitor.h"
#include "server/service/held_spill.h"
#include "server/service/held_uploads.h"
#include "server/service/memory_release.h"
#include "server/service/snapshot.h"
#include "server/service/streams.h"

namespace layerfl {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::shared_ptr<HeldUpload> Upload(const std::string& id,
                                   std::vector<float> values) {
  auto u = std::make_shared<HeldUpload>();
  u->id = id;
  u->round = 4;
  const int64_t n = static_cast<int64_t>(values.size());
  u->update.push_back({"a", {{"a.w", {n}, std::move(values)}}});
  return u;
}

class HeldUploadsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ =
        (std::filesystem::path(::testing::TempDir()) / "held-uploads").string();
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  // Handlers that record what was handed out; the values of one on disk
  // are read from its file as the engine reads them (OpenSpilledValues).
  HeldUploads::Submit Submitted() {
    return [this](HeldUpload& u) {
      submitted_.push_back(u.id);
      if (u.spill_path.empty()) {
        values_.push_back(u.update[0].tensors[0].values);
        return;
      }
      on_disk_.push_back(u.id);
      auto values = OpenSpilledValues(u.spill_path, u.update);
      ASSERT_TRUE(values.ok()) << values.status();
      const absl::Status read = ReadDeltaValues(**values, u.update);
      ASSERT_TRUE(read.ok()) << read;
      values_.push_back(u.update[0].tensors[0].values);
      std::filesystem::remove(u.spill_path);
    };
  }
  HeldUploads::Fail Failed() {
    return [this](HeldUpload& u, const absl::Status& s) {
      failed_.push_back(absl::StrCat(u.id, ": ", s.message()));
    };
  }
  int Files() const {
    int n = 0;
    for (const auto& e : std::filesystem::directory_iterator(dir_)) {
      (void)e;
      ++n;
    }
    return n;
  }

  std::string dir_;
  std::vector<std::string> submitted_, failed_, on_disk_;
  std::vector<std::vector<float>> values_;
};

TEST_F(HeldUploadsTest, HandedOutInIdOrderUpToTheFirstBlocked) {
  HeldUploads held(1 << 20, "", nullptr);
  held.Hold(Upload("c3", {3}));
  held.Hold(Upload("c1", {1}));
  held.Hold(Upload("c2", {2}));
  EXPECT_EQ(held.first_id(), "c1");
  EXPECT_TRUE(held.contains("c2"));
  EXPECT_EQ(held.stats().held_bytes, 12);
  // c2 must wait, so c3 (not blocked itself) waits behind it.
  held.Drain([](const HeldUpload& u) { return u.id == "c2"; }, Submitted());
  EXPECT_THAT(submitted_, ElementsAre("c1"));
  EXPECT_EQ(held.stats().held_bytes, 8);
  held.Drain([](const HeldUpload&) { return false; }, Submitted());
  EXPECT_THAT(submitted_, ElementsAre("c1", "c2", "c3"));
  EXPECT_TRUE(held.empty());
  EXPECT_EQ(held.stats().held_bytes, 0);
  EXPECT_EQ(held.stats().peak_held_bytes, 12);
  EXPECT_THAT(failed_, ::testing::IsEmpty());
}

TEST_F(HeldUploadsTest, BeyondTheLimitTheValuesWaitOnDiskAndComeBackExact) {
  std::vector<std::string> log;
  HeldUploads held(8, dir_, [&log](const std::string& l) { log.push_back(l); });
  held.Hold(Upload("c1", {1.5f, -2.25f}));  // 8 bytes: within the limit
  held.Hold(Upload("c2", {0.1f, 1e-30f}));  // 8 more: to disk
  EXPECT_EQ(held.stats().held_bytes, 8);
  EXPECT_EQ(held.stats().spilled, 1);
  EXPECT_EQ(Files(), 1);
  ASSERT_EQ(log.size(), 1u);
  EXPECT_THAT(log[0], HasSubstr("round 4: the update of c2 waits for its "
                                "turn on disk (8 bytes already wait"));
  held.Drain([](const HeldUpload&) { return false; }, Submitted());
  EXPECT_THAT(submitted_, ElementsAre("c1", "c2"));
  EXPECT_THAT(on_disk_, ElementsAre("c2"));  // handed out on disk
  EXPECT_THAT(values_[1], ElementsAre(0.1f, 1e-30f));  // bit for bit
  EXPECT_EQ(Files(), 0);
}

// An update on disk is read back a tensor at a time, in two passes, the
// CRC checked at the end of each; a file of the wrong size, cut short or
// damaged is refused naming it.
TEST_F(HeldUploadsTest, AnUpdateOnDiskIsReadBackCheckedInEveryPass) {
  std::vector<LayerDelta> update = {
      {"a", {{"a.w", {2}, {1.5f, -2.25f}}, {"a.b", {1}, {3.0f}}}},
      {"b", {{"b.w", {1, 2}, {0.5f, 1e-30f}}}}};
  const std::string path = dir_ + "/u.bin";
  {
    SpillWriter writer(path);  // as an upload received to disk writes it
    for (const LayerDelta& d : update) {
      ASSERT_TRUE(writer.Append(d.tensors).ok());
    }
    ASSERT_TRUE(writer.Finish().ok());
  }
  EXPECT_EQ(std::filesystem::file_size(path), 5 * 4 + 4u);
  std::vector<LayerDelta> shapes = update;
  for (LayerDelta& d : shapes) {
    for (Tensor32& t : d.tensors) t.values.clear();
  }
  auto values = OpenSpilledValues(path, shapes);
  ASSERT_TRUE(values.ok()) << values.status();
  for (int pass = 0; pass < 2; ++pass) {
    ASSERT_TRUE((*values)->Rewind().ok());
    auto w = (*values)->Next(2);
    ASSERT_TRUE(w.ok());
    EXPECT_THAT(std::vector<float>(*w, *w + 2), ElementsAre(1.5f, -2.25f));
    ASSERT_TRUE((*values)->Next(1).ok());
    auto last = (*values)->Next(2);
    ASSERT_TRUE(last.ok()) << last.status();
    EXPECT_THAT(std::vector<float>(*last, *last + 2),
                ElementsAre(0.5f, 1e-30f));
    EXPECT_FALSE((*values)->Next(1).ok());  // past the end
  }

  // A flipped bit: the CRC fails when the last tensor is read.
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(5);
    f.put('\x7f');
  }
  values = OpenSpilledValues(path, shapes);
  ASSERT_TRUE(values.ok());
  ASSERT_TRUE((*values)->Rewind().ok());
  ASSERT_TRUE((*values)->Next(2).ok());
  ASSERT_TRUE((*values)->Next(1).ok());
  const absl::Status crc = (*values)->Next(2).status();
  EXPECT_EQ(crc.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(crc.message()),
              HasSubstr("the update on disk " + path + " fails its CRC-32"));

  std::ofstream(path, std::ios::trunc) << "garbage";
  const absl::Status size = OpenSpilledValues(path, shapes).status();
  EXPECT_EQ(size.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(size.message()),
              HasSubstr(path + " has 7 bytes, expected 24"));
  EXPECT_EQ(OpenSpilledValues(dir_ + "/none.bin", shapes).status().code(),
            absl::StatusCode::kNotFound);
}

// An update received to disk stays there while it is held.
TEST_F(HeldUploadsTest, AnUpdateReceivedToDiskIsHeldWhereItIs) {
  HeldUploads held(1 << 20, dir_, nullptr);
  auto u = Upload("c1", {7});
  const std::string path = dir_ + "/recv-1.bin";
  {
    SpillWriter writer(path);
    ASSERT_TRUE(writer.Append(u->update[0].tensors).ok());
    ASSERT_TRUE(writer.Finish().ok());
  }
  u->update[0].tensors[0].values.clear();
  u->spill_path = path;
  held.Hold(u);
  EXPECT_EQ(held.stats().held_bytes, 0);
  EXPECT_EQ(held.stats().spilled, 0);
  EXPECT_EQ(Files(), 1);
  held.Flush(absl::OkStatus(), Submitted(), Failed());
  EXPECT_THAT(on_disk_, ElementsAre("c1"));
  EXPECT_THAT(values_[0], ElementsAre(7.0f));
}

TEST_F(HeldUploadsTest, FlushWithAnErrorRefusesEverythingAndRemovesFiles) {
  HeldUploads held(4, dir_, nullptr);
  held.Hold(Upload("c1", {1}));
  held.Hold(Upload("c2", {2}));  // on disk
  ASSERT_EQ(Files(), 1);
  held.Flush(absl::UnavailableError("shutting_down: bye"), Submitted(),
             Failed());
  EXPECT_THAT(submitted_, ::testing::IsEmpty());
  EXPECT_THAT(failed_,
              ElementsAre("c1: shutting_down: bye", "c2: shutting_down: bye"));
  EXPECT_EQ(Files(), 0);
  EXPECT_TRUE(held.empty());
}

ModelWeights Model() {
  ModelWeights w;
  w.layers.push_back({"a", 3, {{"a.w", {3}, {1.0f, 2.0f, 3.0f}}}});
  w.layers.push_back({"b", 1, {{"b.w", {1}, {-4.5f}}}});
  return w;
}

// The payload of one layer's messages, reassembled from their chunks.
std::string Payload(const EncodedLayer& layer) {
  std::string bytes;
  for (size_t i = 0; i < layer.messages.size(); ++i) {
    wire::v1::FetchReply reply;
    EXPECT_TRUE(reply.ParseFromString(layer.Serialized(i)));
    EXPECT_EQ(reply.chunk().offset(), bytes.size());
    bytes += reply.chunk().data();
  }
  return bytes;
}

TEST(Snapshot, ChunksCarryTheValuesAndUnchangedLayersAreShared) {
  const ModelWeights w = Model();
  Snapshot first;
  first.layers = EncodeSnapshot(w, nullptr, Encoding::kFloat32, 8);
  ASSERT_EQ(first.layers.size(), 2u);
  EXPECT_EQ(first.layers[0]->layer, "a");
  EXPECT_EQ(first.layers[0]->version, 3);
  EXPECT_EQ(first.layers[0]->payload_bytes, 12);
  EXPECT_EQ(first.layers[0]->messages.size(), 2u);  // 8 + 4 bytes
  wire::v1::FetchReply head;
  ASSERT_TRUE(head.ParseFromString(first.layers[0]->Serialized(0)));
  EXPECT_EQ(head.chunk().header().layer(), "a");
  EXPECT_EQ(head.chunk().header().version(), 3);
  const std::string a = Payload(*first.layers[0]);
  ASSERT_EQ(a.size(), 12u);
  float values[3];
  std::memcpy(values, a.data(), 12);
  EXPECT_THAT(values, ElementsAre(1.0f, 2.0f, 3.0f));

  ModelWeights next = w;
  next.layers[1].tensors[0].values[0] = 7.0f;
  next.layers[1].version = 2;
  const auto again = EncodeSnapshot(next, &first, Encoding::kFloat32, 8);
  EXPECT_EQ(again[0], first.layers[0]);  // the same encoded layer, not a copy
  EXPECT_NE(again[1], first.layers[1]);
  EXPECT_EQ(again[1]->version, 2);
  const std::string b = Payload(*again[1]);
  float v;
  ASSERT_EQ(b.size(), 4u);
  std::memcpy(&v, b.data(), 4);
  EXPECT_EQ(v, 7.0f);
  // float16 halves the payload.
  EXPECT_EQ(EncodeSnapshot(w, nullptr, Encoding::kFloat16, 8)[0]->payload_bytes,
            6);
}

// With float32 a snapshot reads the model's values in place: no second copy,
// and what it sends is what the ordinary serialization of each chunk parses
// to, also when a chunk spans two tensors. A later write to the model copies
// (copy on write), so the snapshot keeps sending the version it encoded.
TEST(Snapshot, Float32ReadsTheModelsValuesInPlaceAndKeepsItsVersion) {
  ModelWeights w;
  w.layers.push_back(
      {"a", 1, {{"a.w", {3}, {1.0f, 2.0f, 3.0f}}, {"a.b", {2}, {4.0f, 5.0f}}}});
  const ModelWeights original = w;
  const auto encoded = EncodeSnapshot(w, nullptr, Encoding::kFloat32, 8);
  ASSERT_EQ(encoded.size(), 1u);
  for (int t = 0; t < 2; ++t) {
    EXPECT_TRUE(encoded[0]->values.tensors[t].values.SharesWith(
        w.layers[0].tensors[t].values));
  }
  ASSERT_EQ(encoded[0]->messages.size(), 3u);  // 8 + 8 (spans both) + 4
  EXPECT_EQ(encoded[0]->Pieces(1).size(), 3u);  // head, a.w[2], a.b[0]
  LayerStreamEncoder reference({SourceOf(original.layers[0])},
                               Encoding::kFloat32, 8, /*with_specs=*/true);
  ChunkFrame frame;
  for (size_t i = 0; i < encoded[0]->messages.size(); ++i) {
    ASSERT_TRUE(reference.Next(&frame));
    wire::v1::FetchReply want;
    ToProto(std::move(frame), want.mutable_chunk());
    wire::v1::FetchReply got;
    ASSERT_TRUE(got.ParseFromString(encoded[0]->Serialized(i)));
    EXPECT_EQ(got.SerializeAsString(), want.SerializeAsString()) << i;
  }
  EXPECT_FALSE(reference.Next(&frame));

  w.layers[0].tensors[1].values[0] = 9.0f;
  EXPECT_FALSE(encoded[0]->values.tensors[1].values.SharesWith(
      w.layers[0].tensors[1].values));
  const std::string payload = Payload(*encoded[0]);
  ASSERT_EQ(payload.size(), 20u);
  float values[5];
  std::memcpy(values, payload.data(), 20);
  EXPECT_THAT(values, ElementsAre(1.0f, 2.0f, 3.0f, 4.0f, 5.0f));
}

// An asynchronous commit's staleness reaches Prometheus as a histogram.
TEST(RunMonitorTest, ExportsEachFoldedUpdatesStaleness) {
  RunMonitor monitor({"run", 4, {"a", "b"}, "strategic", "layers", false},
                     [] { return LiveState{}; });
  RoundRecord r;
  r.round = 1;
  for (int64_t t : {0, 1, 1, 4}) {
    ClientRoundRecord c;
    c.id = "c";
    c.layers = {"a"};
    c.contributed = true;
    c.staleness = t;
    r.clients.push_back(c);
  }
  monitor.RecordRound(r);
  RoundRecord sync;  // synchronous rounds carry none
  sync.round = 2;
  sync.clients.resize(3);
  monitor.RecordRound(sync);
  const std::string text = monitor.MetricsText();
  for (const char* line :
       {"layerfl_update_staleness_count 4", "layerfl_update_staleness_sum 6",
        "layerfl_update_staleness_bucket{le=\"0\"} 1",
        "layerfl_update_staleness_bucket{le=\"1\"} 3",
        "layerfl_update_staleness_bucket{le=\"3\"} 3",
        "layerfl_update_staleness_bucket{le=\"5\"} 4"}) {
    EXPECT_THAT(text, HasSubstr(std::string(line) + "\n")) << text;
  }
}

// The live gauges an operator sizes a coordinator by: the long polls held
// (layerfl_polls_waiting) and the process's own memory, CPU and descriptors
// (the standard process_* names, read from /proc).
TEST(RunMonitorTest, ExportsHeldPollsAndTheProcessResources) {
  RunMonitor monitor({"run", 4, {"a", "b"}, "strategic", "layers", false}, [] {
    LiveState s;
    s.service.polls_waiting = 7;
    return s;
  });
  const std::string text = monitor.MetricsText();
  EXPECT_THAT(text, HasSubstr("\nlayerfl_polls_waiting 7\n")) << text;
  for (const char* name :
       {"process_resident_memory_bytes ", "process_cpu_seconds_total ",
        "process_open_fds ", "process_start_time_seconds "}) {
    EXPECT_THAT(text, HasSubstr(std::string("\n") + name)) << text;
  }
}

// The coordinator's free pages go back to the kernel once it has been quiet
// for a whole period after some activity, once per quiet stretch, and
// never while the activity moves (a round's transfers).
TEST(QuietReleaseTest, ReleasesOnceAfterAQuietPeriodNeverDuringActivity) {
  const absl::Time t0 = absl::UnixEpoch();
  const auto at = [&](double s) { return t0 + absl::Seconds(s); };
  QuietRelease r(absl::Seconds(10), t0);
  EXPECT_FALSE(r.Due(at(5), 0));
  EXPECT_TRUE(r.Due(at(10), 0));   // the start's garbage, once
  EXPECT_FALSE(r.Due(at(30), 0));  // nothing happened since
  // A round: the activity moves every second for 40 s; no release.
  for (int s = 31; s <= 70; ++s) EXPECT_FALSE(r.Due(at(s), s * 1000)) << s;
  EXPECT_FALSE(r.Due(at(79), 70000));  // 9 s quiet
  EXPECT_TRUE(r.Due(at(80), 70000));   // 10 s quiet
  EXPECT_FALSE(r.Due(at(95), 70000));
  // Joins move it too.
  EXPECT_FALSE(r.Due(at(96), 70001));
  EXPECT_TRUE(r.Due(at(106), 70001));
  // Zero period: never.
  QuietRelease never(absl::ZeroDuration(), t0);
  EXPECT_FALSE(never.Due(at(100), 0));
}

// With thousands connected the dashboard's state lists the 100 longest
// silent (nearest to timing out, ties by id) and counts them all.
TEST(RunMonitorTest, StateListsTheLongestSilentClientsAndCountsAll) {
  RunMonitor monitor({"run", 4, {"a"}, "strategic", "layers", false}, [] {
    LiveState s;
    for (int i = 0; i < 1000; ++i) {
      // 0..499 s of silence, each twice (c0000 and c0500 both 0 s, ...).
      s.service.clients.push_back({absl::StrFormat("c%04d", i), 1.0,
                                   absl::Seconds(i % 500)});
    }
    return s;
  });
  const nlohmann::json j = nlohmann::json::parse(monitor.StateJson());
  EXPECT_EQ(j.at("clients_connected"), 1000);
  const nlohmann::json& clients = j.at("clients");
  ASSERT_EQ(clients.size(), 100u);
  EXPECT_EQ(clients[0].at("id"), "c0499");  // 499 s, before c0999 (id order)
  EXPECT_EQ(clients[1].at("id"), "c0999");
  EXPECT_EQ(clients[0].at("since_contact_s"), 499.0);
  EXPECT_EQ(clients[99].at("id"), "c0950");  // 450 s: the 50th pair
  // Few connected: all of them.
  RunMonitor few({"run", 4, {"a"}, "strategic", "layers", false}, [] {
    LiveState s;
    s.service.clients.push_back({"only", 2.0, absl::Seconds(3)});
    return s;
  });
  const nlohmann::json f = nlohmann::json::parse(few.StateJson());
  EXPECT_EQ(f.at("clients_connected"), 1);
  ASSERT_EQ(f.at("clients").size(), 1u);
  EXPECT_EQ(f.at("clients")[0].at("budget"), 2.0);
}


// The stream registry: one upload stream per client, the cap on bytes in
// memory, bytes freed exactly once, and deadlines of a second per MiB.
TEST(StreamRegistryTest, OneUploadPerClientACapAndDeadlines) {
  StreamRegistry streams(absl::Seconds(10), 10 << 20);
  int cancels[4] = {0, 0, 0, 0};
  const int keys[4] = {0, 1, 2, 3};
  for (int k = 0; k < 4; ++k) {
    streams.Open(&keys[k], [&cancels, k] { ++cancels[k]; });
  }
  EXPECT_TRUE(streams.AdmitUpload(&keys[0], "a", 6 << 20).ok());
  const absl::Status again = streams.AdmitUpload(&keys[1], "a", 1);
  EXPECT_THAT(std::string(again.message()),
              ::testing::StartsWith("duplicate: client 'a' already has"));
  const absl::Status busy = streams.AdmitUpload(&keys[1], "b", 5 << 20);
  EXPECT_EQ(busy.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(busy.message()), ::testing::StartsWith("busy: "));
  EXPECT_TRUE(streams.AdmitUpload(&keys[1], "b", 4 << 20).ok());
  EXPECT_EQ(streams.upload_bytes_in_flight(), 10 << 20);
  streams.Read(&keys[0]);  // read whole: its update is still in memory
  EXPECT_EQ(streams.upload_bytes_in_flight(), 10 << 20);
  streams.Release(&keys[0]);  // added or spilled: its bytes leave the cap ...
  streams.Release(&keys[0]);  // once
  EXPECT_EQ(streams.upload_bytes_in_flight(), 4 << 20);
  EXPECT_THAT(std::string(streams.AdmitUpload(&keys[2], "a", 1).message()),
              ::testing::StartsWith("duplicate: "));  // ... not its place
  streams.Close(&keys[0]);
  streams.Close(&keys[0]);  // twice: nothing freed twice
  EXPECT_EQ(streams.upload_bytes_in_flight(), 4 << 20);
  EXPECT_TRUE(streams.AdmitUpload(&keys[2], "a", 1 << 20).ok());
  // Deadlines: 10 s + 1 s per MiB from Open; a read stream has none.
  const absl::Time now = absl::Now();
  EXPECT_TRUE(streams.CancelOverdue(now + absl::Seconds(9)).empty());
  std::vector<std::string> cut = streams.CancelOverdue(now + absl::Seconds(12));
  EXPECT_THAT(cut, ::testing::ElementsAre(
                       "the upload of 'a'",  // key 2: 10 + 1 s
                       "a download or an upload before its header"));  // key 3
  cut = streams.CancelOverdue(now + absl::Seconds(15));
  EXPECT_THAT(cut, ::testing::ElementsAre("the upload of 'b'"));  // 10 + 4 s
  EXPECT_TRUE(streams.CancelOverdue(now + absl::Hours(1)).empty());
  EXPECT_EQ(cancels[0], 0);
  EXPECT_EQ(cancels[1], 1);
  EXPECT_EQ(cancels[2], 1);
  EXPECT_EQ(cancels[3], 1);
}

// max_uploads: a second upload is busy while one is in memory, read whole
// or not; once it is released (or its stream closes), the next is admitted.
TEST(StreamRegistryTest, ACountCapKeepsOneUploadInFlight) {
  StreamRegistry streams(absl::Seconds(10), 100 << 20, /*max_uploads=*/1);
  const int keys[3] = {0, 1, 2};
  for (const int& k : keys) streams.Open(&k, [] {});
  EXPECT_TRUE(streams.AdmitUpload(&keys[0], "a", 1 << 20).ok());
  const absl::Status busy = streams.AdmitUpload(&keys[1], "b", 1 << 20);
  EXPECT_EQ(busy.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(busy.message()),
              ::testing::StartsWith("busy: 1 uploads are in memory"));
  streams.Read(&keys[0]);
  EXPECT_FALSE(streams.AdmitUpload(&keys[1], "b", 1 << 20).ok());
  streams.Release(&keys[0]);
  EXPECT_TRUE(streams.AdmitUpload(&keys[1], "b", 1 << 20).ok());
  streams.Close(&keys[1]);  // closed unread: its place is free again
  streams.Close(&keys[0]);  // released before: counted once
  EXPECT_EQ(streams.upload_bytes_in_flight(), 0);
  EXPECT_TRUE(streams.AdmitUpload(&keys[2], "c", 1 << 20).ok());
  EXPECT_FALSE(streams.AdmitUpload(&keys[0], "d", 1).ok());  // closed key
}

}  // namespace
}  // namespace layerfl

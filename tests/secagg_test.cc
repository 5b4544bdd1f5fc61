// Secure aggregation over per-layer participant sets (common/secagg): exact
// sums, masked inputs that reveal nothing readable, dropouts, and what a
// dishonest server or a replaying network would try.
#include "common/secagg/secagg.h"

#include <cmath>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace layerfl {
namespace {

using ::testing::HasSubstr;

struct Participant {
  std::string id;
  std::vector<int> layers;
  std::vector<std::vector<uint32_t>> values;  // per trained layer
};

// Runs phases 1-3 for every participant; those in `no_input` share keys but
// never send their masked input.
struct Round {
  Round(int64_t round, int threshold, std::vector<int64_t> sizes,
        std::vector<Participant> people)
      : server(round, threshold, sizes), participants(std::move(people)) {
    for (const Participant& p : participants) {
      clients[p.id] = std::make_unique<SecAggClient>(p.id, round);
    }
  }
  void AdvertiseAndShare() {
    for (const Participant& p : participants) {
      ASSERT_TRUE(server.AddAdvert(clients[p.id]->Advertise(), p.layers).ok());
    }
    absl::StatusOr<SecAggRoster> r = server.Roster();
    ASSERT_TRUE(r.ok()) << r.status();
    roster = *r;
    for (const Participant& p : participants) {
      absl::StatusOr<std::vector<SecAggShare>> shares =
          clients[p.id]->ShareKeys(roster);
      ASSERT_TRUE(shares.ok()) << shares.status();
      ASSERT_TRUE(server.AddShares(p.id, *shares).ok());
    }
  }
  void MaskAll(const std::set<std::string>& no_input = {}) {
    for (const Participant& p : participants) {
      absl::StatusOr<SecAggMaskedInput> in =
          clients[p.id]->Mask(server.SharesFor(p.id), p.values);
      ASSERT_TRUE(in.ok()) << in.status();
      masked[p.id] = *in;
      if (!no_input.count(p.id)) {
        ASSERT_TRUE(server.AddMaskedInput(*in).ok());
      }
    }
  }
  // Survivors answer (those in `silent` do not).
  void Unmask(const std::set<std::string>& silent = {}) {
    absl::StatusOr<SecAggUnmaskRequest> req = server.UnmaskRequest();
    ASSERT_TRUE(req.ok()) << req.status();
    for (const std::string& id : req->survivors) {
      if (silent.count(id)) continue;
      absl::StatusOr<SecAggUnmaskResponse> resp = clients[id]->Unmask(*req);
      ASSERT_TRUE(resp.ok()) << resp.status();
      ASSERT_TRUE(server.AddUnmaskResponse(*resp).ok());
    }
  }
  // The plain per-layer sums over `contributors`.
  std::vector<std::vector<uint32_t>> Expected(
      const std::set<std::string>& excluded) const {
    std::vector<std::vector<uint32_t>> sums(roster.layer_sizes.size());
    for (const Participant& p : participants) {
      if (excluded.count(p.id)) continue;
      for (size_t i = 0; i < p.layers.size(); ++i) {
        auto& acc = sums[p.layers[i]];
        if (acc.empty()) acc.assign(roster.layer_sizes[p.layers[i]], 0);
        for (size_t k = 0; k < acc.size(); ++k) acc[k] += p.values[i][k];
      }
    }
    return sums;
  }

  SecAggServer server;
  std::vector<Participant> participants;
  std::map<std::string, std::unique_ptr<SecAggClient>> clients;
  std::map<std::string, SecAggMaskedInput> masked;
  SecAggRoster roster;
};

std::vector<Participant> People(int n, const std::vector<int64_t>& sizes,
                                uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<Participant> out;
  for (int i = 0; i < n; ++i) {
    Participant p;
    p.id = "client-" + std::to_string(100 + i);
    // Different layer sets: layer 0 for everyone, then a pattern; the last
    // layer for nobody.
    for (int l = 0; l + 1 < static_cast<int>(sizes.size()); ++l) {
      if (l == 0 || (i + l) % 3 != 0) p.layers.push_back(l);
    }
    for (int l : p.layers) {
      std::vector<uint32_t> v(sizes[l]);
      for (uint32_t& x : v) x = rng() % 2001;  // small, like a quantized delta
      p.values.push_back(v);
    }
    out.push_back(p);
  }
  return out;
}

const std::vector<int64_t> kSizes = {17, 5, 9, 3, 4};

TEST(SecAggTest, PerLayerSumsEqualThePlainSumsExactly) {
  Round r(7, 3, kSizes, People(6, kSizes, 1));
  r.AdvertiseAndShare();
  r.MaskAll();
  r.Unmask();
  absl::StatusOr<std::vector<std::vector<uint32_t>>> sums = r.server.Sums();
  ASSERT_TRUE(sums.ok()) << sums.status();
  EXPECT_EQ(*sums, r.Expected({}));
  EXPECT_TRUE((*sums)[4].empty());  // a layer nobody trained costs nothing
  std::vector<int> n = r.server.SurvivorsPerLayer();
  EXPECT_EQ(n[0], 6);
  EXPECT_EQ(n[4], 0);
  EXPECT_LT(n[1], 6);  // the sets really differ
}

// What the server receives from one client: nearly every entry differs from
// its input, and the top bits of the masked values are uniform (chi-square
// over 16 bins, 15 degrees of freedom: p = 1e-6 at 50.5).
TEST(SecAggTest, MaskedInputIsUniformLooking) {
  const std::vector<int64_t> sizes = {40000, 1};  // layer 1: nobody
  std::vector<Participant> people = People(4, sizes, 2);
  for (Participant& p : people) {
    for (uint32_t& x : p.values[0]) x = 3;  // a constant, trivially readable
  }
  Round r(1, 3, sizes, people);
  r.AdvertiseAndShare();
  r.MaskAll();
  const std::vector<uint32_t>& seen = r.masked["client-100"].layers[0];
  int same = 0;
  std::vector<int> bins(16, 0);
  for (uint32_t v : seen) {
    same += v == 3u;
    ++bins[v >> 28];
  }
  EXPECT_LE(same, 2);
  const double expected = seen.size() / 16.0;
  double chi2 = 0;
  for (int b : bins) chi2 += (b - expected) * (b - expected) / expected;
  EXPECT_LT(chi2, 50.5);
  // Two clients' masked inputs are unrelated although their inputs match.
  const std::vector<uint32_t>& other = r.masked["client-101"].layers[0];
  int equal = 0;
  for (size_t k = 0; k < seen.size(); ++k) equal += seen[k] == other[k];
  EXPECT_LE(equal, 2);
}

// k clients share keys, then never send their input (k up to n - t): the
// sums are still exact over the survivors.
TEST(SecAggTest, DropoutsAfterSharingUpToNMinusT) {
  const int n = 7, t = 4;
  for (int k = 0; k <= n - t; ++k) {
    Round r(3, t, kSizes, People(n, kSizes, 10 + k));
    r.AdvertiseAndShare();
    std::set<std::string> gone;
    for (int i = 0; i < k; ++i) gone.insert("client-" + std::to_string(100 + 2 * i % n));
    r.MaskAll(gone);
    r.Unmask();
    absl::StatusOr<std::vector<std::vector<uint32_t>>> sums = r.server.Sums();
    ASSERT_TRUE(sums.ok()) << "k=" << k << ": " << sums.status();
    EXPECT_EQ(*sums, r.Expected(gone)) << "k=" << k;
  }
}

// Survivors that fall silent at the unmask step do not matter while t answer.
TEST(SecAggTest, SilentSurvivorsWhileThresholdAnswers) {
  Round r(3, 3, kSizes, People(5, kSizes, 4));
  r.AdvertiseAndShare();
  r.MaskAll({"client-104"});
  r.Unmask({"client-100"});  // 4 survivors, 3 answer
  absl::StatusOr<std::vector<std::vector<uint32_t>>> sums = r.server.Sums();
  ASSERT_TRUE(sums.ok()) << sums.status();
  EXPECT_EQ(*sums, r.Expected({"client-104"}));
}

TEST(SecAggTest, FewerSurvivorsThanThresholdAbandons) {
  Round r(3, 4, kSizes, People(5, kSizes, 5));
  r.AdvertiseAndShare();
  r.MaskAll({"client-100", "client-101"});  // 3 inputs, threshold 4
  absl::StatusOr<SecAggUnmaskRequest> req = r.server.UnmaskRequest();
  ASSERT_FALSE(req.ok());
  EXPECT_EQ(req.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(req.status().message(), HasSubstr("too_few_survivors"));
  // t - 1 unmask responses are not enough either.
  Round s(3, 4, kSizes, People(5, kSizes, 6));
  s.AdvertiseAndShare();
  s.MaskAll();
  s.Unmask({"client-100", "client-101"});
  EXPECT_THAT(s.server.Sums().status().message(), HasSubstr("too_few_survivors"));
}

// A server that names a peer survivor and dropped (at once, or one after the
// other) would get both its self mask and its key: refused.
TEST(SecAggTest, ClientRefusesToRevealBothSecretsOfAPeer) {
  Round r(2, 3, kSizes, People(5, kSizes, 7));
  r.AdvertiseAndShare();
  r.MaskAll();
  SecAggClient& c = *r.clients["client-100"];
  SecAggUnmaskRequest both{2,
                           {"client-100", "client-101", "client-102"},
                           {"client-102"}};
  EXPECT_THAT(c.Unmask(both).status().message(), HasSubstr("double_reveal"));
  SecAggUnmaskRequest first{2,
                            {"client-100", "client-101", "client-102",
                             "client-103"},
                            {"client-104"}};
  ASSERT_TRUE(c.Unmask(first).ok());
  SecAggUnmaskRequest then{2,
                           {"client-100", "client-101", "client-104"},
                           {"client-103"}};
  EXPECT_THAT(c.Unmask(then).status().message(), HasSubstr("double_reveal"));
  SecAggUnmaskRequest few{2, {"client-100", "client-101"}, {}};
  EXPECT_THAT(c.Unmask(few).status().message(), HasSubstr("too_few_survivors"));
}

TEST(SecAggTest, MalformedAndReplayedMessagesRefused) {
  Round r(5, 3, kSizes, People(4, kSizes, 8));
  r.AdvertiseAndShare();
  // A share altered in transit does not authenticate.
  std::vector<SecAggShare> shares = r.server.SharesFor("client-100");
  ASSERT_EQ(shares.size(), 3u);
  std::vector<SecAggShare> tampered = shares;
  tampered[0].ciphertext[40] ^= 1;
  const Participant& p0 = r.participants[0];
  EXPECT_THAT(r.clients["client-100"]->Mask(tampered, p0.values).status().message(),
              HasSubstr("bad_share"));
  // The same share twice.
  std::vector<SecAggShare> twice = shares;
  twice.push_back(shares[0]);
  EXPECT_THAT(r.clients["client-100"]->Mask(twice, p0.values).status().message(),
              HasSubstr("replayed"));
  // A share addressed to someone else.
  std::vector<SecAggShare> theirs;
  for (const SecAggShare& s : r.server.SharesFor("client-101")) {
    if (s.from != "client-100") theirs.push_back(s);
  }
  EXPECT_THAT(r.clients["client-100"]->Mask(theirs, p0.values).status().message(),
              HasSubstr("malformed: share for 'client-101'"));
  // Wrong layer count / length.
  EXPECT_THAT(r.clients["client-100"]->Mask(shares, {}).status().message(),
              HasSubstr("malformed"));
  // Round 5's advert replayed into round 6.
  SecAggServer next(6, 3, kSizes);
  EXPECT_THAT(next.AddAdvert(r.clients["client-101"]->Advertise(), {0})
                  .message(),
              HasSubstr("replayed"));
  // The server refuses inputs from clients that did not share, a second
  // input, inputs of another round, and wrong lengths.
  r.MaskAll();
  SecAggMaskedInput again = r.masked["client-100"];
  EXPECT_THAT(r.server.AddMaskedInput(again).message(), HasSubstr("replayed"));
  SecAggMaskedInput stranger = again;
  stranger.id = "client-999";
  EXPECT_THAT(r.server.AddMaskedInput(stranger).message(),
              HasSubstr("unknown_peer"));
  SecAggMaskedInput old = again;
  old.round = 4;
  EXPECT_THAT(r.server.AddMaskedInput(old).message(), HasSubstr("replayed"));
  // A second set of shares, and shares after masking began.
  EXPECT_THAT(r.server.AddShares("client-100", shares).message(),
              HasSubstr("replayed"));
  // An unmask response that does not answer the request.
  absl::StatusOr<SecAggUnmaskRequest> req = r.server.UnmaskRequest();
  ASSERT_TRUE(req.ok());
  absl::StatusOr<SecAggUnmaskResponse> resp = r.clients["client-100"]->Unmask(*req);
  ASSERT_TRUE(resp.ok());
  SecAggUnmaskResponse partial = *resp;
  partial.self_mask_shares.erase(partial.self_mask_shares.begin());
  EXPECT_THAT(r.server.AddUnmaskResponse(partial).message(), HasSubstr("malformed"));
  ASSERT_TRUE(r.server.AddUnmaskResponse(*resp).ok());
  EXPECT_THAT(r.server.AddUnmaskResponse(*resp).message(), HasSubstr("replayed"));
}

// A survivor that sends a wrong share is caught against the commitment.
TEST(SecAggTest, CorruptShareCaughtByCommitment) {
  Round r(9, 3, kSizes, People(4, kSizes, 9));
  r.AdvertiseAndShare();
  r.MaskAll();
  absl::StatusOr<SecAggUnmaskRequest> req = r.server.UnmaskRequest();
  ASSERT_TRUE(req.ok());
  bool first = true;
  for (const std::string& id : req->survivors) {
    absl::StatusOr<SecAggUnmaskResponse> resp = r.clients[id]->Unmask(*req);
    ASSERT_TRUE(resp.ok());
    if (first) resp->self_mask_shares.begin()->second[0] ^= 1;
    first = false;
    ASSERT_TRUE(r.server.AddUnmaskResponse(*resp).ok());
  }
  EXPECT_THAT(r.server.Sums().status().message(), HasSubstr("bad_share"));
}

TEST(SecAggTest, RosterChecks) {
  SecAggServer server(1, 3, kSizes);
  SecAggClient a("a", 1), b("b", 1);
  ASSERT_TRUE(server.AddAdvert(a.Advertise(), {0, 1}).ok());
  EXPECT_THAT(server.AddAdvert(a.Advertise(), {0}).message(), HasSubstr("replayed"));
  EXPECT_THAT(server.AddAdvert(b.Advertise(), {1, 0}).message(),
              HasSubstr("malformed"));
  EXPECT_THAT(server.AddAdvert(b.Advertise(), {9}).message(), HasSubstr("malformed"));
  ASSERT_TRUE(server.AddAdvert(b.Advertise(), {1}).ok());
  EXPECT_THAT(server.Roster().status().message(), HasSubstr("too_few_survivors"));
  // A roster that carries other keys for a client.
  SecAggRoster forged;
  forged.round = 1;
  forged.threshold = 2;
  forged.layer_sizes = kSizes;
  SecAggAdvert fake = a.Advertise();
  fake.enc_pk[0] ^= 1;
  forged.entries = {{fake, {0}}, {b.Advertise(), {1}}};
  EXPECT_THAT(a.ShareKeys(forged).status().message(), HasSubstr("other keys"));
}

// Quantization: clip, scale with headroom for n summands, stochastic
// rounding (unbiased), two's complement; the decoded sum is the exact sum of
// the quantized values.
TEST(SecAggQuantizeTest, HeadroomExactDecodeAndUnbiasedRounding) {
  const double range = 0.5;
  const int n = 100;
  const double scale = SecAggScale(range, n);
  EXPECT_EQ(scale, std::floor((2147483647.0 / n - 1) / range));
  Key32 key{};
  // n updates at the extremes: the sum stays in range and decodes exactly.
  std::vector<uint32_t> sum(2, 0);
  std::vector<int64_t> exact(2, 0);
  for (int i = 0; i < n; ++i) {
    key[0] = static_cast<unsigned char>(i);
    std::vector<uint32_t> q = SecAggQuantize({0.5f, -7.0f}, range, scale, key);
    for (int k = 0; k < 2; ++k) {
      sum[k] += q[k];
      exact[k] += static_cast<int32_t>(q[k]);
    }
  }
  std::vector<double> decoded = SecAggDequantize(sum, scale);
  EXPECT_DOUBLE_EQ(decoded[0], exact[0] / scale);
  EXPECT_DOUBLE_EQ(decoded[1], exact[1] / scale);
  EXPECT_NEAR(decoded[0], 50.0, n / scale);
  EXPECT_NEAR(decoded[1], -50.0, n / scale);  // -7 clipped to -0.5
  // Unbiased: a value a third of the way between two grid points.
  const float v = static_cast<float>((1000 + 1.0 / 3) / scale);
  std::vector<float> many(30000, v);
  std::vector<uint32_t> q = SecAggQuantize(many, range, scale, key);
  double mean = 0;
  for (uint32_t x : q) mean += static_cast<int32_t>(x);
  mean /= q.size();
  EXPECT_NEAR(mean, v * scale, 0.01);
  EXPECT_EQ(SecAggScale(0, 3), 0);
}

}  // namespace
}  // namespace layerfl

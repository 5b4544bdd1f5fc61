// Secure aggregation over per-layer participant sets (common/secagg): exact
// sums, masked inputs that reveal nothing readable, dropouts, what a
// dishonest server or a replaying network would try, and clients that deal
// garbage shares or return lying unmask shares.
#include "common/secagg/secagg.h"

#include <sodium.h>

#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/secagg/participant.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace layerfl {
namespace {

using ::testing::ElementsAre;
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
  // Shares a dealer hands the server pass through `deal` first.
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
      for (SecAggShare& s : *shares) {
        if (deal) deal(s);
      }
      ASSERT_TRUE(server.AddShares(p.id, *shares).ok());
    }
  }
  // `cheater` deals well-formed garbage (random bytes, the right length) to
  // every id in `victims`.
  void DealGarbage(const std::string& cheater,
                   const std::set<std::string>& victims) {
    deal = [cheater, victims, rng = std::mt19937(99)](SecAggShare& s) mutable {
      if (s.from != cheater || !victims.count(s.to)) return;
      for (char& c : s.ciphertext) c = static_cast<char>(rng());
    };
  }
  void MaskAll(const std::set<std::string>& no_input = {}) {
    for (const Participant& p : participants) {
      absl::StatusOr<SecAggMaskedInput> in =
          clients[p.id]->Mask(server.SharesFor(p.id), p.values);
      ASSERT_TRUE(in.ok()) << p.id << ": " << in.status();
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
    request = *req;
    for (const std::string& id : req->survivors) {
      if (silent.count(id)) continue;
      absl::StatusOr<SecAggUnmaskResponse> resp = clients[id]->Unmask(*req);
      ASSERT_TRUE(resp.ok()) << resp.status();
      responses[id] = *resp;
      ASSERT_TRUE(server.AddUnmaskResponse(*resp).ok());
    }
  }
  std::set<std::string> Ids() const {
    std::set<std::string> ids;
    for (const Participant& p : participants) ids.insert(p.id);
    return ids;
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
  std::function<void(SecAggShare&)> deal;
  SecAggUnmaskRequest request;
  std::map<std::string, SecAggUnmaskResponse> responses;
};

std::vector<std::string> Sorted(const std::set<std::string>& ids) {
  return {ids.begin(), ids.end()};
}

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
  std::vector<SecAggShare> shares = r.server.SharesFor("client-100");
  ASSERT_EQ(shares.size(), 3u);
  const Participant& p0 = r.participants[0];
  // A share from outside the roster, or from this client itself.
  std::vector<SecAggShare> stranger_share = shares;
  stranger_share[0].from = "client-999";
  EXPECT_THAT(
      r.clients["client-100"]->Mask(stranger_share, p0.values).status().message(),
      HasSubstr("unknown_peer: share from 'client-999'"));
  std::vector<SecAggShare> own = shares;
  own[0].from = "client-100";
  EXPECT_THAT(r.clients["client-100"]->Mask(own, p0.values).status().message(),
              HasSubstr("unknown_peer: share from 'client-100'"));
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

// A share altered in transit, or dealt as garbage: the recipient leaves its
// sender out and says so; the server drops the sender and the sums are exact
// over everyone else.
TEST(SecAggTest, TamperedShareExcludesItsSenderNotTheRound) {
  Round r(5, 3, kSizes, People(5, kSizes, 8));
  r.AdvertiseAndShare();
  std::vector<SecAggShare> shares = r.server.SharesFor("client-100");
  ASSERT_EQ(shares.size(), 4u);
  ASSERT_EQ(shares[0].from, "client-101");
  shares[0].ciphertext[40] ^= 1;
  absl::StatusOr<SecAggMaskedInput> in =
      r.clients["client-100"]->Mask(shares, r.participants[0].values);
  ASSERT_TRUE(in.ok()) << in.status();
  EXPECT_THAT(in->excluded, ElementsAre("client-101"));
  ASSERT_TRUE(r.server.AddMaskedInput(*in).ok());
  for (size_t i = 1; i < r.participants.size(); ++i) {
    const Participant& p = r.participants[i];
    absl::StatusOr<SecAggMaskedInput> other =
        r.clients[p.id]->Mask(r.server.SharesFor(p.id), p.values);
    ASSERT_TRUE(other.ok()) << other.status();
    EXPECT_TRUE(other->excluded.empty());
    ASSERT_TRUE(r.server.AddMaskedInput(*other).ok());
  }
  EXPECT_EQ(r.server.Excluded(),
            (std::map<std::string, std::string>{{"client-101", "client-100"}}));
  r.Unmask();
  EXPECT_THAT(r.request.survivors,
              ElementsAre("client-100", "client-102", "client-103", "client-104"));
  EXPECT_THAT(r.request.dropped, ElementsAre("client-101"));
  // client-100 never held client-101's key share; the others return theirs.
  EXPECT_TRUE(r.responses["client-100"].key_shares.empty());
  EXPECT_EQ(r.responses["client-102"].key_shares.count("client-101"), 1u);
  absl::StatusOr<std::vector<std::vector<uint32_t>>> sums = r.server.Sums();
  ASSERT_TRUE(sums.ok()) << sums.status();
  EXPECT_EQ(*sums, r.Expected({"client-101"}));
}

// A dealer sends same-length random bytes to every peer. Its own input
// arrives first (before anyone accused it) and is still left out.
TEST(SecAggTest, GarbageDealerIsExcludedAndTheSumsAreExact) {
  Round r(11, 3, kSizes, People(5, kSizes, 11));
  r.DealGarbage("client-100", {"client-101", "client-102", "client-103",
                               "client-104"});
  r.AdvertiseAndShare();
  r.MaskAll();
  EXPECT_TRUE(r.masked["client-100"].excluded.empty());
  for (const std::string id :
       {"client-101", "client-102", "client-103", "client-104"}) {
    EXPECT_THAT(r.masked[id].excluded, ElementsAre("client-100")) << id;
  }
  EXPECT_EQ(r.server.Excluded(),
            (std::map<std::string, std::string>{{"client-100", "client-101"}}));
  EXPECT_EQ(r.server.SurvivorsPerLayer()[0], 4);
  r.Unmask();
  EXPECT_THAT(r.request.survivors,
              ElementsAre("client-101", "client-102", "client-103", "client-104"));
  EXPECT_THAT(r.request.dropped, ElementsAre("client-100"));
  // Nobody holds the cheater's key: no key share is asked for or accepted.
  for (const auto& [id, resp] : r.responses) {
    EXPECT_TRUE(resp.key_shares.empty()) << id;
  }
  absl::StatusOr<std::vector<std::vector<uint32_t>>> sums = r.server.Sums();
  ASSERT_TRUE(sums.ok()) << sums.status();
  const std::vector<std::vector<uint32_t>> honest = r.Expected({"client-100"});
  EXPECT_EQ(*sums, honest);
  EXPECT_NE(honest, r.Expected({}));  // the cheater's update really is out
  std::vector<int> n = r.server.SurvivorsPerLayer();
  EXPECT_EQ(n[0], 4);
  EXPECT_LT(n[1], 4);  // the layer sets differ
}

// The cheater (client-106, 7 clients, threshold 4: a majority) deals
// garbage to the first g of the others. g <= 2: 4+ survivors still hold its
// key share, and only the cheater drops. g = 4 or 5: its key share is held
// by 1-2 survivors, too few to rebuild it, so those holders drop as well
// and the sums are over the g clients that excluded it.
TEST(SecAggTest, PartialGarbageDropsTheHoldersThatCannotBeUnmasked) {
  const std::vector<std::string> others = {"client-100", "client-101",
                                           "client-102", "client-103",
                                           "client-104", "client-105"};
  for (int g : {1, 2, 4, 5}) {
    Round r(12, 4, kSizes, People(7, kSizes, 20 + g));
    const std::set<std::string> victims(others.begin(), others.begin() + g);
    r.DealGarbage("client-106", victims);
    r.AdvertiseAndShare();
    r.MaskAll();
    for (const std::string& id : others) {
      EXPECT_EQ(r.masked[id].excluded.size(), victims.count(id)) << id;
    }
    r.Unmask();
    const std::set<std::string> survivors =
        g <= 2 ? std::set<std::string>(others.begin(), others.end()) : victims;
    std::set<std::string> dropped;
    for (const std::string& id : r.Ids()) {
      if (!survivors.count(id)) dropped.insert(id);
    }
    EXPECT_EQ(r.request.survivors, Sorted(survivors)) << "g=" << g;
    EXPECT_EQ(r.request.dropped, Sorted(dropped)) << "g=" << g;
    absl::StatusOr<std::vector<std::vector<uint32_t>>> sums = r.server.Sums();
    ASSERT_TRUE(sums.ok()) << "g=" << g << ": " << sums.status();
    EXPECT_EQ(*sums, r.Expected(dropped)) << "g=" << g;
  }
  // Threshold 4 of 6: two victims leave three holders, who drop; the two
  // victims are then too few to rebuild the holders' keys and drop in turn.
  Round r(13, 4, kSizes, People(6, kSizes, 30));
  r.DealGarbage("client-105", {"client-100", "client-101"});
  r.AdvertiseAndShare();
  r.MaskAll();
  absl::StatusOr<SecAggUnmaskRequest> req = r.server.UnmaskRequest();
  ASSERT_FALSE(req.ok());
  EXPECT_EQ(req.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(req.status().message(), HasSubstr("too_few_survivors"));
  EXPECT_THAT(std::string(req.status().message()),
              HasSubstr("1 of them accused, 5 stranded; 0 survivors"));
}

// A dealer whose clear-text commitment does not match what it encrypted is
// excluded by the recipient (who would otherwise be blamed at unmask time).
TEST(SecAggTest, DealerWithAWrongCommitmentIsExcluded) {
  Round r(14, 3, kSizes, People(5, kSizes, 14));
  r.deal = [](SecAggShare& s) {
    if (s.from == "client-103" && s.to == "client-100") s.key_commitment[5] ^= 1;
  };
  r.AdvertiseAndShare();
  r.MaskAll();
  EXPECT_THAT(r.masked["client-100"].excluded, ElementsAre("client-103"));
  EXPECT_TRUE(r.masked["client-101"].excluded.empty());
  r.Unmask();
  EXPECT_THAT(r.request.dropped, ElementsAre("client-103"));
  absl::StatusOr<std::vector<std::vector<uint32_t>>> sums = r.server.Sums();
  ASSERT_TRUE(sums.ok()) << sums.status();
  EXPECT_EQ(*sums, r.Expected({"client-103"}));
}

// Masking needs threshold - 1 peers whose shares open (threshold 4: 3).
TEST(SecAggTest, MaskRefusesWithFewerThanThresholdMinusOneShares) {
  Round r(15, 4, kSizes, People(5, kSizes, 15));
  r.AdvertiseAndShare();
  SecAggClient& c = *r.clients["client-100"];
  const std::vector<uint32_t> unused;
  const auto& values = r.participants[0].values;
  const std::vector<SecAggShare> all = r.server.SharesFor("client-100");
  ASSERT_EQ(all.size(), 4u);
  absl::StatusOr<SecAggMaskedInput> none = c.Mask({}, values);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(none.status().message(),
              HasSubstr("too_few_shares: 0 shares arrived, 0 authenticated; "
                        "masking needs 3"));
  const std::vector<SecAggShare> two(all.begin(), all.begin() + 2);
  EXPECT_THAT(c.Mask(two, values).status().message(),
              HasSubstr("too_few_shares: 2 shares arrived, 2 authenticated"));
  std::vector<SecAggShare> three_bad(all.begin(), all.begin() + 3);
  three_bad[1].ciphertext[50] ^= 1;
  absl::StatusOr<SecAggMaskedInput> bad = c.Mask(three_bad, values);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(bad.status().message(),
              HasSubstr("too_few_shares: 3 shares arrived, 2 authenticated"));
  std::vector<SecAggShare> all_garbage = all;
  for (SecAggShare& s : all_garbage) s.ciphertext.assign(s.ciphertext.size(), 'x');
  EXPECT_THAT(c.Mask(all_garbage, values).status().message(),
              HasSubstr("too_few_shares: 4 shares arrived, 0 authenticated"));
  // The refusals changed nothing: three good shares of four still mask.
  std::vector<SecAggShare> one_bad = all;
  one_bad[3].ciphertext[50] ^= 1;
  absl::StatusOr<SecAggMaskedInput> in = c.Mask(one_bad, values);
  ASSERT_TRUE(in.ok()) << in.status();
  EXPECT_THAT(in->excluded, ElementsAre(all[3].from));
}

// What the server accepts as an exclusion list.
TEST(SecAggTest, ServerChecksExclusionLists) {
  Round r(16, 3, kSizes, People(4, kSizes, 16));
  r.AdvertiseAndShare();
  const Participant& p = r.participants[0];
  absl::StatusOr<SecAggMaskedInput> in =
      r.clients[p.id]->Mask(r.server.SharesFor(p.id), p.values);
  ASSERT_TRUE(in.ok()) << in.status();
  SecAggMaskedInput self = *in;
  self.excluded = {"client-100"};
  EXPECT_THAT(r.server.AddMaskedInput(self).message(),
              HasSubstr("malformed: 'client-100' excludes 'client-100'"));
  SecAggMaskedInput stranger = *in;
  stranger.excluded = {"client-999"};
  EXPECT_THAT(r.server.AddMaskedInput(stranger).message(),
              HasSubstr("malformed: 'client-100' excludes 'client-999'"));
  SecAggMaskedInput twice = *in;
  twice.excluded = {"client-101", "client-101"};
  EXPECT_THAT(r.server.AddMaskedInput(twice).message(),
              HasSubstr("malformed: 'client-100' excludes 'client-101'"));
  // Three peers shared; excluding two leaves one, below threshold - 1 = 2.
  SecAggMaskedInput lonely = *in;
  lonely.excluded = {"client-101", "client-102"};
  EXPECT_THAT(r.server.AddMaskedInput(lonely).message(),
              HasSubstr("malformed: 'client-100' masked with 1 peers; at least 2"));
  EXPECT_TRUE(r.server.Excluded().empty());
  ASSERT_TRUE(r.server.AddMaskedInput(*in).ok());
}

// client-101 returns a flipped self-mask share of client-103, client-102 a
// flipped key share of the dropped client-105: both responses are refused
// whole and their senders recorded; the four honest responses (threshold 4
// of 7) rebuild every secret, and both liars' own updates stay in the sums.
TEST(SecAggTest, LyingUnmaskResponsesAreRefusedAndTheSumsStayExact) {
  Round r(17, 4, kSizes, People(7, kSizes, 17));
  r.AdvertiseAndShare();
  r.MaskAll({"client-105"});
  absl::StatusOr<SecAggUnmaskRequest> req = r.server.UnmaskRequest();
  ASSERT_TRUE(req.ok()) << req.status();
  EXPECT_THAT(req->survivors, ElementsAre("client-100", "client-101", "client-102",
                                          "client-103", "client-104",
                                          "client-106"));
  for (const std::string& id : req->survivors) {
    absl::StatusOr<SecAggUnmaskResponse> resp = r.clients[id]->Unmask(*req);
    ASSERT_TRUE(resp.ok()) << resp.status();
    SecAggUnmaskResponse sent = *resp;
    if (id == "client-101") {
      sent.self_mask_shares.at("client-103")[7] ^= 1;
      EXPECT_EQ(r.server.AddUnmaskResponse(sent).message(),
                "bad_share: unmask share of 'client-103' from 'client-101' "
                "does not match its commitment");
      // Its honest response afterwards is refused too.
      EXPECT_THAT(r.server.AddUnmaskResponse(*resp).message(),
                  HasSubstr("bad_share"));
    } else if (id == "client-102") {
      sent.key_shares.at("client-105")[0] ^= 0x80;
      EXPECT_EQ(r.server.AddUnmaskResponse(sent).message(),
                "bad_share: unmask share of 'client-105' from 'client-102' "
                "does not match its commitment");
    } else {
      ASSERT_TRUE(r.server.AddUnmaskResponse(sent).ok());
    }
  }
  EXPECT_EQ(r.server.BadResponders(),
            (std::set<std::string>{"client-101", "client-102"}));
  absl::StatusOr<std::vector<std::vector<uint32_t>>> sums = r.server.Sums();
  ASSERT_TRUE(sums.ok()) << sums.status();
  EXPECT_EQ(*sums, r.Expected({"client-105"}));
  EXPECT_NE(*sums, r.Expected({"client-101", "client-102", "client-105"}));
  EXPECT_EQ(r.server.SurvivorsPerLayer()[0], 6);
}

// A survivor's share of its own seed carries no commitment. It is left out
// while `threshold` others returned theirs; when it is needed and wrong, the
// rebuilt seed fails the advert's commitment and the survivor is blamed.
TEST(SecAggTest, OwnSeedShareIsUsedOnlyWhenNeededAndThenChecked) {
  Round r(9, 3, kSizes, People(4, kSizes, 9));
  r.AdvertiseAndShare();
  r.MaskAll();
  absl::StatusOr<SecAggUnmaskRequest> req = r.server.UnmaskRequest();
  ASSERT_TRUE(req.ok());
  for (const std::string& id : req->survivors) {
    absl::StatusOr<SecAggUnmaskResponse> resp = r.clients[id]->Unmask(*req);
    ASSERT_TRUE(resp.ok());
    if (id == "client-100") resp->self_mask_shares.at("client-100")[0] ^= 1;
    ASSERT_TRUE(r.server.AddUnmaskResponse(*resp).ok());
  }
  absl::StatusOr<std::vector<std::vector<uint32_t>>> sums = r.server.Sums();
  ASSERT_TRUE(sums.ok()) << sums.status();
  EXPECT_EQ(*sums, r.Expected({}));
  EXPECT_TRUE(r.server.BadResponders().empty());

  Round s(9, 3, kSizes, People(3, kSizes, 10));
  s.AdvertiseAndShare();
  s.MaskAll();
  req = s.server.UnmaskRequest();
  ASSERT_TRUE(req.ok());
  for (const std::string& id : req->survivors) {
    absl::StatusOr<SecAggUnmaskResponse> resp = s.clients[id]->Unmask(*req);
    ASSERT_TRUE(resp.ok());
    if (id == "client-100") resp->self_mask_shares.at("client-100")[0] ^= 1;
    ASSERT_TRUE(s.server.AddUnmaskResponse(*resp).ok());
  }
  EXPECT_THAT(s.server.Sums().status().message(),
              HasSubstr("bad_share: the self-mask seed of 'client-100'"));
  EXPECT_EQ(s.server.BadResponders(), std::set<std::string>{"client-100"});
}

// An unmask response must hold exactly the key shares of the dropped peers
// its sender did not exclude.
TEST(SecAggTest, UnmaskResponseKeySharesFollowExclusions) {
  Round r(18, 3, kSizes, People(5, kSizes, 18));
  r.DealGarbage("client-104", {"client-100"});
  r.AdvertiseAndShare();
  r.MaskAll();
  absl::StatusOr<SecAggUnmaskRequest> req = r.server.UnmaskRequest();
  ASSERT_TRUE(req.ok()) << req.status();
  EXPECT_THAT(req->dropped, ElementsAre("client-104"));
  // client-100 excluded client-104: it answers without its key share.
  absl::StatusOr<SecAggUnmaskResponse> r100 = r.clients["client-100"]->Unmask(*req);
  ASSERT_TRUE(r100.ok()) << r100.status();
  EXPECT_TRUE(r100->key_shares.empty());
  SecAggUnmaskResponse extra = *r100;
  extra.key_shares["client-104"] = std::string(32, 'k');
  EXPECT_THAT(r.server.AddUnmaskResponse(extra).message(), HasSubstr("malformed"));
  absl::StatusOr<SecAggUnmaskResponse> r101 = r.clients["client-101"]->Unmask(*req);
  ASSERT_TRUE(r101.ok());
  ASSERT_EQ(r101->key_shares.count("client-104"), 1u);
  SecAggUnmaskResponse missing = *r101;
  missing.key_shares.clear();
  EXPECT_THAT(r.server.AddUnmaskResponse(missing).message(),
              HasSubstr("malformed"));
  EXPECT_TRUE(r.server.BadResponders().empty());
  ASSERT_TRUE(r.server.AddUnmaskResponse(*r100).ok());
  ASSERT_TRUE(r.server.AddUnmaskResponse(*r101).ok());
  for (const std::string id : {"client-102", "client-103"}) {
    absl::StatusOr<SecAggUnmaskResponse> resp = r.clients[id]->Unmask(*req);
    ASSERT_TRUE(resp.ok());
    ASSERT_TRUE(r.server.AddUnmaskResponse(*resp).ok());
  }
  absl::StatusOr<std::vector<std::vector<uint32_t>>> sums = r.server.Sums();
  ASSERT_TRUE(sums.ok()) << sums.status();
  EXPECT_EQ(*sums, r.Expected({"client-104"}));
}

TEST(SecAggTest, RosterChecks) {
  SecAggServer server(1, 3, kSizes);
  SecAggClient a("a", 1), b("b", 1);
  ASSERT_TRUE(server.AddAdvert(a.Advertise(), {0, 1}).ok());
  EXPECT_THAT(server.AddAdvert(a.Advertise(), {0}).message(), HasSubstr("replayed"));
  EXPECT_THAT(server.AddAdvert(b.Advertise(), {1, 0}).message(),
              HasSubstr("malformed"));
  EXPECT_THAT(server.AddAdvert(b.Advertise(), {9}).message(), HasSubstr("malformed"));
  // A low-order key would make every peer's key agreement with it fail.
  SecAggClient c("c", 1);
  SecAggAdvert zero_mask = c.Advertise();
  zero_mask.mask_pk.fill(0);
  EXPECT_THAT(server.AddAdvert(zero_mask, {0}).message(),
              HasSubstr("malformed: a degenerate key in the advert of 'c'"));
  SecAggAdvert zero_enc = c.Advertise();
  zero_enc.enc_pk.fill(0);
  EXPECT_THAT(server.AddAdvert(zero_enc, {0}).message(),
              HasSubstr("malformed: a degenerate key"));
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

// Identities (Bonawitz et al.'s malicious variant): each client signs its
// advert with its Ed25519 key and checks every roster entry against the
// operator's public keys. A coordinator that substitutes a peer's keys, drops
// a signature or adds an id nobody vouched for is refused.
class IdentityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_GE(sodium_init(), 0);
    for (const char* id : {"a", "b", "c"}) {
      unsigned char pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
      unsigned char seed[crypto_sign_SEEDBYTES];
      randombytes_buf(seed, sizeof(seed));
      crypto_sign_seed_keypair(pk, sk, seed);
      seeds_[id] = Hex(seed, sizeof(seed));
      absl::StrAppend(&peers_, id, " ", Hex(pk, sizeof(pk)), "\n");
    }
  }
  static std::string Hex(const unsigned char* b, size_t n) {
    std::string out(2 * n + 1, '\0');
    sodium_bin2hex(out.data(), out.size(), b, n);
    out.pop_back();
    return out;
  }
  std::shared_ptr<const SecAggIdentity> Identity(const std::string& id) {
    absl::StatusOr<SecAggIdentity> i =
        ParseSecAggIdentity(id, seeds_[id], "key", peers_, "peers");
    EXPECT_TRUE(i.ok()) << i.status();
    return std::make_shared<const SecAggIdentity>(*i);
  }
  std::map<std::string, std::string> seeds_;
  std::string peers_;
};

TEST_F(IdentityTest, SignedAdvertsPassAndForgedKeysAreRefused) {
  SecAggClient a("a", 1, Identity("a")), b("b", 1, Identity("b")),
      c("c", 1, Identity("c"));
  SecAggServer server(1, 2, kSizes);
  ASSERT_TRUE(server.AddAdvert(a.Advertise(), {0}).ok());
  ASSERT_TRUE(server.AddAdvert(b.Advertise(), {1}).ok());
  ASSERT_TRUE(server.AddAdvert(c.Advertise(), {0, 1}).ok());
  EXPECT_EQ(a.Advertise().signature.size(), 64u);
  absl::StatusOr<SecAggRoster> roster = server.Roster();
  ASSERT_TRUE(roster.ok()) << roster.status();

  // The coordinator puts its own key in c's entry (to read the shares sent
  // to c): a's check of c's signature fails.
  SecAggRoster forged = *roster;
  SecAggClient mallory("c", 1);
  forged.entries[2].advert.enc_pk = mallory.Advertise().enc_pk;
  EXPECT_THAT(std::string(a.ShareKeys(forged).status().message()),
              HasSubstr("malformed: the advert of 'c' is not signed by its "
                        "identity key"));
  // An unsigned entry, and one of an id nobody vouched for.
  SecAggRoster unsigned_entry = *roster;
  unsigned_entry.entries[1].advert.signature.clear();
  EXPECT_THAT(std::string(a.ShareKeys(unsigned_entry).status().message()),
              HasSubstr("the advert of 'b' is not signed"));
  SecAggRoster stranger = *roster;
  stranger.entries[2] = {mallory.Advertise(), {0}};
  stranger.entries[2].advert.id = "d";
  EXPECT_THAT(std::string(a.ShareKeys(stranger).status().message()),
              HasSubstr("unknown_peer: no identity key for 'd'"));
  // The honest roster shares; the refusals changed nothing.
  EXPECT_TRUE(a.ShareKeys(*roster).ok());
  EXPECT_TRUE(b.ShareKeys(*roster).ok());
}

TEST_F(IdentityTest, IdentityFilesAreChecked) {
  EXPECT_THAT(std::string(ParseSecAggIdentity("a", "xyz", "key", peers_, "peers")
                              .status()
                              .message()),
              HasSubstr("key: expected a 32-byte Ed25519 seed"));
  EXPECT_THAT(std::string(ParseSecAggIdentity("a", seeds_["b"], "key", peers_,
                                               "peers")
                              .status()
                              .message()),
              HasSubstr("peers: does not list 'a' with the public key of key"));
  EXPECT_THAT(std::string(ParseSecAggIdentity("a", seeds_["a"], "key",
                                              peers_ + "z 00\n", "peers")
                              .status()
                              .message()),
              HasSubstr("peers: client 'z': expected a public key of 64 hex "
                        "digits"));
  EXPECT_THAT(
      std::string(ParseSecAggIdentity("a", seeds_["a"], "key",
                                      peers_ + peers_.substr(0, peers_.find('\n') + 1),
                                      "peers")
                      .status()
                      .message()),
      HasSubstr("peers:4: client 'a' listed twice"));
}

// A layer two clients trained, one of them gone: summing it over the one
// left would hand the coordinator that client's values. The server does
// not ask, and a client asked anyway (a lying coordinator) refuses.
TEST(SecAggTest, ALayerLeftWithOneOfItsTrainersIsNeverUnmasked) {
  const std::vector<int64_t> sizes = {5, 3};
  std::vector<Participant> people;
  for (const char* id : {"a", "b", "c", "d"}) {
    Participant p;
    p.id = id;
    p.layers = (p.id == "a" || p.id == "b") ? std::vector<int>{0, 1}
                                            : std::vector<int>{0};
    for (int l : p.layers) p.values.push_back(std::vector<uint32_t>(sizes[l], 7));
    people.push_back(p);
  }
  Round r(5, 3, sizes, people);
  r.AdvertiseAndShare();
  r.MaskAll({"b"});  // b shared its keys, then vanished
  absl::StatusOr<SecAggUnmaskRequest> req = r.server.UnmaskRequest();
  ASSERT_FALSE(req.ok());
  EXPECT_THAT(std::string(req.status().message()),
              HasSubstr("too_few_survivors: layer 1 would be summed over 1 "
                        "survivor of 2"));
  SecAggUnmaskRequest lie;
  lie.round = 5;
  lie.survivors = {"a", "c", "d"};
  lie.dropped = {"b"};
  EXPECT_THAT(std::string(r.clients["c"]->Unmask(lie).status().message()),
              HasSubstr("too_few_survivors: layer 1 would be summed over 1"));
}

// A roster below a majority (a coordinator that could then split the
// clients in two groups of t) and an advert of another round are refused.
TEST(SecAggTest, ClientRefusesAMinorityThresholdAndAStaleAdvert) {
  SecAggServer server(1, 2, kSizes);
  std::vector<std::unique_ptr<SecAggClient>> clients;
  for (const char* id : {"a", "b", "c", "d"}) {
    clients.push_back(std::make_unique<SecAggClient>(id, 1));
    ASSERT_TRUE(server.AddAdvert(clients.back()->Advertise(), {0}).ok());
  }
  absl::StatusOr<SecAggRoster> roster = server.Roster(2);
  ASSERT_TRUE(roster.ok());
  EXPECT_EQ(roster->threshold, 3);  // raised to a majority of 4
  SecAggRoster minority = *roster;
  minority.threshold = 2;
  EXPECT_THAT(std::string(clients[0]->ShareKeys(minority).status().message()),
              HasSubstr("threshold 2 with 4 participants (it must be a "
                        "majority, >= 3)"));
  SecAggRoster stale = *roster;
  SecAggClient old("b", 0);
  stale.entries[1].advert = old.Advertise();
  EXPECT_THAT(std::string(clients[0]->ShareKeys(stale).status().message()),
              HasSubstr("replayed: the advert of 'b' is of round 0"));
  EXPECT_TRUE(clients[0]->ShareKeys(*roster).ok());
}

// A lying coordinator's roster whose scale would overflow quantization's
// integer cast (or wrap the sums), or whose range is not finite, is refused
// before anything is shared.
TEST(SecAggTest, ParticipantRefusesAnUnusableQuantization) {
  SecAggServer server(1, 2, kSizes);
  SecAggParticipant a("a", {"l0", "l1", "l2"}, 1);
  SecAggParticipant b("b", {"l0", "l1", "l2"}, 1);
  ASSERT_TRUE(server.AddAdvert(a.Advertise(1), {0}).ok());
  ASSERT_TRUE(server.AddAdvert(b.Advertise(1), {1}).ok());
  absl::StatusOr<SecAggRoster> roster = server.Roster();
  ASSERT_TRUE(roster.ok()) << roster.status();
  for (const auto& [scale, range] :
       {std::pair<double, double>{roster->scale * 2, roster->value_range},
        {1e300, roster->value_range},
        {roster->scale, std::numeric_limits<double>::infinity()},
        {0.5, roster->value_range}}) {
    SecAggRoster lying = *roster;
    lying.scale = scale;
    lying.value_range = range;
    EXPECT_THAT(a.ShareKeys(lying).status().message(),
                HasSubstr("malformed: roster quantization scale"))
        << scale << " " << range;
  }
  EXPECT_TRUE(a.ShareKeys(*roster).ok());
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

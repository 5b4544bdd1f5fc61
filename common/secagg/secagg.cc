#include "common/secagg/secagg.h"

#include <sodium.h>

extern "C" {
#include <libgfshare.h>
}

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/privacy/noise.h"
#include "common/util/secret.h"
#include "common/util/status_macros.h"

namespace layerfl {
namespace {

constexpr char kShareMagic[] = "lfsa1";
constexpr size_t kMagicLen = sizeof(kShareMagic) - 1;
constexpr char kCommitTag[] = "lfsa-share-commitment1";
constexpr char kKeyShare = 'k';
constexpr char kSelfShare = 's';

absl::Status Refuse(absl::string_view reason, absl::string_view detail) {
  return absl::InvalidArgumentError(absl::StrCat(reason, ": ", detail));
}

void FillRandom(unsigned char* buf, unsigned int n) { randombytes_buf(buf, n); }

// The first layer that at least two roster entries train and exactly one
// survivor does, described; nullopt when there is none.
std::optional<std::string> LoneSurvivorLayer(
    const SecAggRoster& roster, const std::set<std::string>& survivors) {
  std::map<int, std::pair<int, int>> trainers;  // layer -> (roster, alive)
  for (const SecAggRosterEntry& e : roster.entries) {
    for (int l : e.layers) {
      ++trainers[l].first;
      if (survivors.count(e.advert.id)) ++trainers[l].second;
    }
  }
  for (const auto& [layer, n] : trainers) {
    if (n.first >= 2 && n.second == 1) {
      return absl::StrCat("layer ", layer, " would be summed over 1 survivor of ",
                          n.first, " that trained it");
    }
  }
  return std::nullopt;
}

void InitCrypto() {
  EnsureSodium();
  gfshare_fill_rand = FillRandom;
}

Key32 Hash(const std::string& data) {
  Key32 out;
  crypto_generichash(out.data(), out.size(),
                     reinterpret_cast<const unsigned char*>(data.data()),
                     data.size(), nullptr, 0);
  return out;
}

std::string AsString(const Key32& k) {
  return std::string(reinterpret_cast<const char*>(k.data()), k.size());
}

// Shamir: share k (1-based) of n, any t of them rebuild the secret.
std::vector<std::string> Split(const Key32& secret, int n, int t) {
  std::vector<unsigned char> nrs(n);
  for (int k = 0; k < n; ++k) nrs[k] = static_cast<unsigned char>(k + 1);
  gfshare_ctx* ctx = gfshare_ctx_init_enc(nrs.data(), n,
                                          static_cast<unsigned char>(t), 32);
  Key32 copy = secret;
  gfshare_ctx_enc_setsecret(ctx, copy.data());
  std::vector<std::string> shares(n);
  for (int k = 0; k < n; ++k) {
    Key32 share;
    gfshare_ctx_enc_getshare(ctx, static_cast<unsigned char>(k), share.data());
    shares[k] = AsString(share);
  }
  gfshare_ctx_free(ctx);
  sodium_memzero(copy.data(), copy.size());
  return shares;
}

// `shares`: (1-based share number, 32 bytes).
Key32 Combine(const std::vector<std::pair<int, std::string>>& shares) {
  std::vector<unsigned char> nrs;
  for (const auto& [k, s] : shares) nrs.push_back(static_cast<unsigned char>(k));
  gfshare_ctx* ctx = gfshare_ctx_init_dec(
      nrs.data(), static_cast<unsigned int>(nrs.size()), 32);
  for (size_t i = 0; i < shares.size(); ++i) {
    std::string s = shares[i].second;
    gfshare_ctx_dec_giveshare(ctx, static_cast<unsigned char>(i),
                              reinterpret_cast<unsigned char*>(s.data()));
  }
  Key32 secret;
  gfshare_ctx_dec_extract(ctx, secret.data());
  gfshare_ctx_free(ctx);
  return secret;
}

// The seed two clients share: BLAKE2b(X25519(sk_a, pk_b) || pk_lo || pk_hi),
// the keys ordered by their owners' ids. Empty on a degenerate key.
std::optional<Key32> PairSeed(const Key32& my_sk, const std::string& my_id,
                              const Key32& my_pk, const std::string& peer_id,
                              const Key32& peer_pk) {
  unsigned char q[crypto_scalarmult_BYTES];
  if (crypto_scalarmult(q, my_sk.data(), peer_pk.data()) != 0) {
    return std::nullopt;
  }
  std::string input(reinterpret_cast<const char*>(q), sizeof(q));
  sodium_memzero(q, sizeof(q));
  const bool mine_first = my_id < peer_id;
  input += AsString(mine_first ? my_pk : peer_pk);
  input += AsString(mine_first ? peer_pk : my_pk);
  Key32 seed = Hash(input);
  sodium_memzero(input.data(), input.size());
  return seed;
}

// y += sign * PRG(seed, round, layer), n values mod 2^32.
void AddMask(std::vector<uint32_t>& y, const Key32& seed, int64_t round,
             int layer, bool subtract) {
  const std::string label = absl::StrCat("lfsa-mask|", round, "|", layer);
  Key32 key;
  crypto_generichash(key.data(), key.size(),
                     reinterpret_cast<const unsigned char*>(label.data()),
                     label.size(), seed.data(), seed.size());
  std::vector<uint32_t> mask(y.size());
  unsigned char nonce[crypto_stream_chacha20_ietf_NONCEBYTES] = {};
  crypto_stream_chacha20_ietf(reinterpret_cast<unsigned char*>(mask.data()),
                              mask.size() * sizeof(uint32_t), nonce,
                              key.data());
  sodium_memzero(key.data(), key.size());
  if (subtract) {
    for (size_t k = 0; k < y.size(); ++k) y[k] -= mask[k];
  } else {
    for (size_t k = 0; k < y.size(); ++k) y[k] += mask[k];
  }
}

void PutU64(std::string& out, uint64_t v) {
  for (int b = 0; b < 8; ++b) out += static_cast<char>((v >> (8 * b)) & 0xff);
}

std::string SharePlaintext(int64_t round, const std::string& from,
                           const std::string& to, const std::string& key_share,
                           const std::string& self_share) {
  std::string pt(kShareMagic, kMagicLen);
  PutU64(pt, static_cast<uint64_t>(round));
  pt += static_cast<char>(from.size());
  pt += from;
  pt += static_cast<char>(to.size());
  pt += to;
  pt += key_share;
  pt += self_share;
  return pt;
}

size_t PlaintextSize(const std::string& from, const std::string& to) {
  return kMagicLen + 8 + 1 + from.size() + 1 + to.size() + 64;
}

// BLAKE2b-256(tag || round || |dealer| dealer || |to| to || kind || share).
Key32 ShareCommitment(int64_t round, const std::string& dealer,
                      const std::string& to, char kind,
                      const std::string& share) {
  std::string in(kCommitTag, sizeof(kCommitTag) - 1);
  PutU64(in, static_cast<uint64_t>(round));
  PutU64(in, dealer.size());
  in += dealer;
  PutU64(in, to.size());
  in += to;
  in += kind;
  in += share;
  Key32 c = Hash(in);
  sodium_memzero(in.data(), in.size());
  return c;
}

struct Opened {
  std::string key_share, self_share;
};

// The two shares in `s`, sent by `s.from` (public key `from_pk`) to `me`;
// nothing when the ciphertext does not authenticate, is bound to another
// round or pair, has the wrong length or does not match the commitments.
std::optional<Opened> OpenShare(const SecAggShare& s, int64_t round,
                                const std::string& me, const Key32& from_pk,
                                const Key32& my_sk) {
  constexpr size_t kOverhead = crypto_box_NONCEBYTES + crypto_box_MACBYTES;
  if (s.ciphertext.size() < kOverhead) return std::nullopt;
  std::string pt(s.ciphertext.size() - kOverhead, 0);
  const auto* c = reinterpret_cast<const unsigned char*>(s.ciphertext.data());
  if (crypto_box_open_easy(reinterpret_cast<unsigned char*>(pt.data()),
                           c + crypto_box_NONCEBYTES,
                           s.ciphertext.size() - crypto_box_NONCEBYTES, c,
                           from_pk.data(), my_sk.data()) != 0) {
    return std::nullopt;
  }
  const std::string head = SharePlaintext(round, s.from, me, "", "");
  std::optional<Opened> out;
  if (pt.size() == PlaintextSize(s.from, me) &&
      pt.compare(0, head.size(), head) == 0) {
    Opened o{pt.substr(head.size(), 32), pt.substr(head.size() + 32, 32)};
    if (ShareCommitment(round, s.from, me, kKeyShare, o.key_share) ==
            s.key_commitment &&
        ShareCommitment(round, s.from, me, kSelfShare, o.self_share) ==
            s.self_commitment) {
      out = std::move(o);
    } else {
      sodium_memzero(o.key_share.data(), o.key_share.size());
      sodium_memzero(o.self_share.data(), o.self_share.size());
    }
  }
  sodium_memzero(pt.data(), pt.size());
  return out;
}

// A low-order X25519 point: its product with every (clamped) scalar is zero,
// so no key agreement with it works.
bool Degenerate(const Key32& pk) {
  Key32 scalar;
  scalar.fill(0x5a);
  unsigned char q[crypto_scalarmult_BYTES];
  const bool bad = crypto_scalarmult(q, scalar.data(), pk.data()) != 0;
  sodium_memzero(q, sizeof(q));
  return bad;
}

bool ValidIds(const std::vector<std::string>& ids) {
  return std::is_sorted(ids.begin(), ids.end()) &&
         std::adjacent_find(ids.begin(), ids.end()) == ids.end();
}

}  // namespace

SecAggClient::SecAggClient(std::string id, int64_t round,
                           std::shared_ptr<const SecAggIdentity> identity)
    : id_(std::move(id)), round_(round), identity_(std::move(identity)) {
  InitCrypto();
  crypto_box_keypair(enc_pk_.data(), enc_sk_.data());
  randombytes_buf(mask_sk_.data(), mask_sk_.size());
  crypto_scalarmult_base(mask_pk_.data(), mask_sk_.data());
  randombytes_buf(seed_.data(), seed_.size());
}

SecAggClient::~SecAggClient() {
  sodium_memzero(enc_sk_.data(), enc_sk_.size());
  sodium_memzero(mask_sk_.data(), mask_sk_.size());
  sodium_memzero(seed_.data(), seed_.size());
}

SecAggAdvert SecAggClient::Advertise() const {
  SecAggAdvert a;
  a.id = id_;
  a.round = round_;
  a.enc_pk = enc_pk_;
  a.mask_pk = mask_pk_;
  a.commitment = Hash(AsString(seed_));
  if (identity_ != nullptr) {
    const std::string message = SecAggAdvertMessage(a);
    a.signature.resize(crypto_sign_BYTES);
    crypto_sign_detached(
        reinterpret_cast<unsigned char*>(a.signature.data()), nullptr,
        reinterpret_cast<const unsigned char*>(message.data()), message.size(),
        identity_->secret_key.data());
  }
  return a;
}

absl::StatusOr<std::vector<SecAggShare>> SecAggClient::ShareKeys(
    const SecAggRoster& roster) {
  if (roster_ != nullptr) return Refuse("replayed", "keys already shared");
  if (roster.round != round_) {
    return Refuse("replayed", absl::StrCat("roster of round ", roster.round,
                                           ", this is round ", round_));
  }
  const int n = static_cast<int>(roster.entries.size());
  if (n > 255) {
    return Refuse("malformed", absl::StrCat(n, " participants; at most 255"));
  }
  // A majority at least: with t <= n/2 a coordinator could tell two
  // disjoint groups of t different survivor sets and collect both secrets of
  // one client (one group's self-mask shares, the other's key shares).
  if (roster.threshold < std::max(2, SecAggMinThreshold(n)) ||
      roster.threshold > n) {
    return Refuse("malformed",
                  absl::StrCat("threshold ", roster.threshold, " with ", n,
                               " participants (it must be a majority, >= ",
                               std::max(2, SecAggMinThreshold(n)), ")"));
  }
  std::vector<std::string> ids;
  my_index_ = -1;
  for (int k = 0; k < n; ++k) {
    const SecAggRosterEntry& e = roster.entries[k];
    ids.push_back(e.advert.id);
    if (e.advert.id.empty() || e.advert.id.size() > 255) {
      return Refuse("malformed", "a roster id must have 1 to 255 characters");
    }
    for (size_t i = 0; i < e.layers.size(); ++i) {
      if (e.layers[i] < 0 ||
          e.layers[i] >= static_cast<int>(roster.layer_sizes.size()) ||
          (i > 0 && e.layers[i] <= e.layers[i - 1])) {
        return Refuse("malformed",
                      absl::StrCat("layers of '", e.advert.id, "'"));
      }
    }
    if (e.advert.id == id_) {
      if (e.advert.enc_pk != enc_pk_ || e.advert.mask_pk != mask_pk_) {
        return Refuse("malformed", "the roster holds other keys for this client");
      }
      my_index_ = k;
    }
    if (e.advert.round != round_) {
      return Refuse("replayed",
                    absl::StrCat("the advert of '", e.advert.id,
                                 "' is of round ", e.advert.round));
    }
    if (identity_ != nullptr) {
      auto peer = identity_->peers.find(e.advert.id);
      if (peer == identity_->peers.end()) {
        return Refuse("unknown_peer",
                      absl::StrCat("no identity key for '", e.advert.id,
                                   "' in the roster"));
      }
      const std::string message = SecAggAdvertMessage(e.advert);
      if (e.advert.signature.size() != crypto_sign_BYTES ||
          crypto_sign_verify_detached(
              reinterpret_cast<const unsigned char*>(e.advert.signature.data()),
              reinterpret_cast<const unsigned char*>(message.data()),
              message.size(), peer->second.data()) != 0) {
        return Refuse("malformed",
                      absl::StrCat("the advert of '", e.advert.id,
                                   "' is not signed by its identity key"));
      }
    }
  }
  if (!ValidIds(ids)) {
    return Refuse("malformed", "roster ids must be distinct and sorted");
  }
  if (my_index_ < 0) {
    return Refuse("unknown_peer", absl::StrCat("'", id_, "' not in the roster"));
  }
  roster_ = std::make_unique<SecAggRoster>(roster);
  const std::vector<std::string> key_shares = Split(mask_sk_, n, roster.threshold);
  const std::vector<std::string> self_shares = Split(seed_, n, roster.threshold);
  held_[id_] = {key_shares[my_index_], self_shares[my_index_]};
  std::vector<SecAggShare> out;
  for (int k = 0; k < n; ++k) {
    if (k == my_index_) continue;
    const SecAggAdvert& peer = roster.entries[k].advert;
    std::string pt = SharePlaintext(round_, id_, peer.id, key_shares[k],
                                    self_shares[k]);
    std::string ct(crypto_box_NONCEBYTES + crypto_box_MACBYTES + pt.size(), 0);
    auto* c = reinterpret_cast<unsigned char*>(ct.data());
    randombytes_buf(c, crypto_box_NONCEBYTES);
    if (crypto_box_easy(c + crypto_box_NONCEBYTES,
                        reinterpret_cast<const unsigned char*>(pt.data()),
                        pt.size(), c, peer.enc_pk.data(),
                        enc_sk_.data()) != 0) {
      return Refuse("malformed", absl::StrCat("the key of '", peer.id,
                                              "' cannot encrypt"));
    }
    sodium_memzero(pt.data(), pt.size());
    SecAggShare share{id_, peer.id, std::move(ct)};
    share.key_commitment =
        ShareCommitment(round_, id_, peer.id, kKeyShare, key_shares[k]);
    share.self_commitment =
        ShareCommitment(round_, id_, peer.id, kSelfShare, self_shares[k]);
    out.push_back(std::move(share));
  }
  return out;
}

absl::StatusOr<SecAggMaskedInput> SecAggClient::Mask(
    const std::vector<SecAggShare>& received,
    const std::vector<std::vector<uint32_t>>& quantized) {
  if (roster_ == nullptr) return Refuse("malformed", "mask before sharing keys");
  if (masked_) return Refuse("replayed", "already masked this round");
  const SecAggRosterEntry& me = roster_->entries[my_index_];
  if (quantized.size() != me.layers.size()) {
    return Refuse("malformed",
                  absl::StrCat(quantized.size(), " layers given, ",
                               me.layers.size(), " assigned"));
  }
  for (size_t i = 0; i < quantized.size(); ++i) {
    if (static_cast<int64_t>(quantized[i].size()) !=
        roster_->layer_sizes[me.layers[i]]) {
      return Refuse("malformed",
                    absl::StrCat("layer ", me.layers[i], " has ",
                                 quantized[i].size(), " values, expected ",
                                 roster_->layer_sizes[me.layers[i]]));
    }
  }
  std::map<std::string, Held> fresh;
  std::set<std::string> seen, excluded;
  for (const SecAggShare& s : received) {
    const SecAggRosterEntry* from = nullptr;
    for (const SecAggRosterEntry& e : roster_->entries) {
      if (e.advert.id == s.from) from = &e;
    }
    if (from == nullptr || s.from == id_) {
      return Refuse("unknown_peer",
                    absl::StrCat("share from '", s.from, "'"));
    }
    if (s.to != id_) {
      return Refuse("malformed", absl::StrCat("share for '", s.to, "'"));
    }
    if (!seen.insert(s.from).second) {
      return Refuse("replayed", absl::StrCat("second share from '", s.from, "'"));
    }
    std::optional<Opened> opened =
        OpenShare(s, round_, id_, from->advert.enc_pk, enc_sk_);
    if (!opened) {
      excluded.insert(s.from);
      continue;
    }
    fresh[s.from] = {std::move(opened->key_share),
                     std::move(opened->self_share)};
  }
  const int needed = roster_->threshold - 1;
  if (static_cast<int>(fresh.size()) < needed) {
    return absl::FailedPreconditionError(absl::StrCat(
        "too_few_shares: ", received.size(), " shares arrived, ",
        fresh.size(), " authenticated; masking needs ", needed,
        " (threshold ", roster_->threshold, " less this client)"));
  }
  for (auto& [peer, held] : fresh) held_[peer] = std::move(held);

  SecAggMaskedInput out;
  out.id = id_;
  out.round = round_;
  out.layers = quantized;
  out.excluded.assign(excluded.begin(), excluded.end());
  for (size_t i = 0; i < me.layers.size(); ++i) {
    const int layer = me.layers[i];
    AddMask(out.layers[i], seed_, round_, layer, false);
    for (const SecAggRosterEntry& e : roster_->entries) {
      if (e.advert.id == id_ || !held_.count(e.advert.id)) continue;
      if (!std::binary_search(e.layers.begin(), e.layers.end(), layer)) {
        continue;
      }
      std::optional<Key32> seed =
          PairSeed(mask_sk_, id_, mask_pk_, e.advert.id, e.advert.mask_pk);
      if (!seed) {
        return Refuse("malformed",
                      absl::StrCat("degenerate key of '", e.advert.id, "'"));
      }
      AddMask(out.layers[i], *seed, round_, layer, id_ > e.advert.id);
    }
  }
  masked_ = true;
  return out;
}

absl::StatusOr<SecAggUnmaskResponse> SecAggClient::Unmask(
    const SecAggUnmaskRequest& request) {
  if (!masked_) return Refuse("malformed", "unmask before masking");
  if (request.round != round_) {
    return Refuse("replayed", absl::StrCat("unmask request of round ",
                                           request.round));
  }
  std::set<std::string> survivors(request.survivors.begin(),
                                  request.survivors.end());
  std::set<std::string> dropped(request.dropped.begin(), request.dropped.end());
  if (survivors.size() != request.survivors.size() ||
      dropped.size() != request.dropped.size()) {
    return Refuse("malformed", "a peer is named twice");
  }
  for (const std::string& p : survivors) {
    if (dropped.count(p) || revealed_key_.count(p)) {
      return Refuse("double_reveal",
                    absl::StrCat("'", p, "' named both survivor and dropped"));
    }
  }
  for (const std::string& p : dropped) {
    if (revealed_self_.count(p)) {
      return Refuse("double_reveal",
                    absl::StrCat("'", p, "' named both survivor and dropped"));
    }
    if (p == id_) return Refuse("malformed", "this client named as dropped");
  }
  if (!survivors.count(id_)) {
    return Refuse("malformed", "this client is not among the survivors");
  }
  if (static_cast<int>(survivors.size()) < roster_->threshold) {
    return Refuse("too_few_survivors",
                  absl::StrCat(survivors.size(), " survivors, threshold ",
                               roster_->threshold));
  }
  for (const std::string& p : request.survivors) {
    if (!held_.count(p)) return Refuse("unknown_peer", absl::StrCat("'", p, "'"));
  }
  // A layer that two or more participants trained, left with one survivor,
  // would be summed over that one client: its update in the clear.
  if (std::optional<std::string> lone = LoneSurvivorLayer(*roster_, survivors)) {
    return Refuse("too_few_survivors", *lone);
  }
  for (const std::string& p : request.dropped) {
    const bool member = std::any_of(
        roster_->entries.begin(), roster_->entries.end(),
        [&p](const SecAggRosterEntry& e) { return e.advert.id == p; });
    if (!member) return Refuse("unknown_peer", absl::StrCat("'", p, "'"));
  }
  SecAggUnmaskResponse out;
  out.id = id_;
  out.round = round_;
  for (const std::string& p : survivors) {
    out.self_mask_shares[p] = held_[p].self_share;
    revealed_self_.insert(p);
  }
  for (const std::string& p : dropped) {
    auto it = held_.find(p);
    if (it != held_.end()) out.key_shares[p] = it->second.key_share;
    revealed_key_.insert(p);
  }
  return out;
}

SecAggServer::SecAggServer(int64_t round, int threshold,
                           std::vector<int64_t> layer_sizes, double value_range)
    : round_(round),
      threshold_(threshold),
      layer_sizes_(std::move(layer_sizes)),
      value_range_(value_range) {
  InitCrypto();
}

const SecAggRosterEntry* SecAggServer::Find(const std::string& id) const {
  auto it = entries_.find(id);
  return it == entries_.end() ? nullptr : &it->second;
}

absl::Status SecAggServer::AddAdvert(const SecAggAdvert& advert,
                                     std::vector<int> layers) {
  if (roster_fixed_) return Refuse("replayed", "the roster is fixed");
  if (advert.round != round_) {
    return Refuse("replayed", absl::StrCat("advert of round ", advert.round));
  }
  if (advert.id.empty() || advert.id.size() > 255) {
    return Refuse("malformed", "an id must have 1 to 255 characters");
  }
  if (entries_.count(advert.id)) {
    return Refuse("replayed", absl::StrCat("second advert of '", advert.id, "'"));
  }
  if (Degenerate(advert.enc_pk) || Degenerate(advert.mask_pk)) {
    return Refuse("malformed", absl::StrCat("a degenerate key in the advert of '",
                                            advert.id, "'"));
  }
  for (size_t i = 0; i < layers.size(); ++i) {
    if (layers[i] < 0 || layers[i] >= static_cast<int>(layer_sizes_.size()) ||
        (i > 0 && layers[i] <= layers[i - 1])) {
      return Refuse("malformed", absl::StrCat("layers of '", advert.id, "'"));
    }
  }
  entries_[advert.id] = {advert, std::move(layers)};
  return absl::OkStatus();
}

absl::StatusOr<SecAggRoster> SecAggServer::Roster(int threshold,
                                                   int summands) {
  if (roster_fixed_) return Refuse("replayed", "the roster is already fixed");
  if (threshold > 0) threshold_ = threshold;
  // Never below a majority (SecAggMinThreshold): clients refuse less.
  threshold_ = std::max(threshold_,
                        SecAggMinThreshold(static_cast<int>(entries_.size())));
  if (static_cast<int>(entries_.size()) < threshold_) {
    return absl::FailedPreconditionError(
        absl::StrCat("too_few_survivors: ", entries_.size(),
                     " clients advertised keys, threshold ", threshold_));
  }
  if (entries_.size() > 255) {
    return Refuse("malformed", "at most 255 participants per round");
  }
  roster_fixed_ = true;
  SecAggRoster r;
  r.round = round_;
  r.threshold = threshold_;
  r.value_range = value_range_;
  r.scale = SecAggScale(
      value_range_, std::max(summands, static_cast<int>(entries_.size())));
  r.layer_sizes = layer_sizes_;
  order_.clear();
  for (const auto& [id, e] : entries_) {
    r.entries.push_back(e);
    order_.push_back(id);
  }
  return r;
}

absl::Status SecAggServer::AddShares(const std::string& from,
                                     const std::vector<SecAggShare>& shares) {
  if (!roster_fixed_ || Find(from) == nullptr) {
    return Refuse("unknown_peer", absl::StrCat("shares from '", from, "'"));
  }
  if (!inputs_.empty()) return Refuse("replayed", "sharing is over");
  if (shares_.count(from)) {
    return Refuse("replayed", absl::StrCat("second shares from '", from, "'"));
  }
  if (shares.size() + 1 != entries_.size()) {
    return Refuse("malformed", absl::StrCat("'", from, "' sent ", shares.size(),
                                            " shares, expected ",
                                            entries_.size() - 1));
  }
  std::set<std::string> to;
  for (const SecAggShare& s : shares) {
    if (s.from != from || Find(s.to) == nullptr || s.to == from ||
        !to.insert(s.to).second) {
      return Refuse("malformed", absl::StrCat("a share of '", from, "' for '",
                                              s.to, "'"));
    }
    if (s.ciphertext.size() != crypto_box_NONCEBYTES + crypto_box_MACBYTES +
                                   PlaintextSize(from, s.to)) {
      return Refuse("malformed", absl::StrCat("a share of '", from,
                                              "' has the wrong length"));
    }
  }
  shares_[from] = shares;
  return absl::OkStatus();
}

std::vector<SecAggShare> SecAggServer::SharesFor(const std::string& id) const {
  std::vector<SecAggShare> out;
  for (const auto& [from, list] : shares_) {
    for (const SecAggShare& s : list) {
      if (s.to == id) out.push_back(s);
    }
  }
  return out;
}

const SecAggShare* SecAggServer::Dealt(const std::string& dealer,
                                      const std::string& to) const {
  auto it = shares_.find(dealer);
  if (it == shares_.end()) return nullptr;
  for (const SecAggShare& s : it->second) {
    if (s.to == to) return &s;
  }
  return nullptr;
}

bool SecAggServer::Holds(const std::string& s, const std::string& d) const {
  auto in = inputs_.find(s);
  if (s == d || in == inputs_.end() || !shares_.count(d)) return false;
  const std::vector<std::string>& x = in->second.excluded;
  return std::find(x.begin(), x.end(), d) == x.end();
}

absl::Status SecAggServer::AddMaskedInput(const SecAggMaskedInput& input) {
  if (input.round != round_) {
    return Refuse("replayed", absl::StrCat("input of round ", input.round));
  }
  const SecAggRosterEntry* e = Find(input.id);
  if (e == nullptr || !shares_.count(input.id)) {
    return Refuse("unknown_peer",
                  absl::StrCat("input from '", input.id, "' (no shares)"));
  }
  if (unmasking_) return Refuse("replayed", "inputs are closed");
  if (inputs_.count(input.id)) {
    return Refuse("replayed", absl::StrCat("second input from '", input.id, "'"));
  }
  if (input.layers.size() != e->layers.size()) {
    return Refuse("malformed", absl::StrCat("'", input.id, "' sent ",
                                            input.layers.size(), " layers, ",
                                            e->layers.size(), " assigned"));
  }
  for (size_t i = 0; i < input.layers.size(); ++i) {
    if (static_cast<int64_t>(input.layers[i].size()) !=
        layer_sizes_[e->layers[i]]) {
      return Refuse("malformed", absl::StrCat("layer ", e->layers[i], " of '",
                                              input.id, "' has the wrong length"));
    }
  }
  std::set<std::string> excluded;
  for (const std::string& x : input.excluded) {
    if (x == input.id || !shares_.count(x) || !excluded.insert(x).second) {
      return Refuse("malformed", absl::StrCat("'", input.id, "' excludes '",
                                              x, "'"));
    }
  }
  const int peers = static_cast<int>(shares_.size() - 1 - excluded.size());
  if (peers < threshold_ - 1) {
    return Refuse("malformed",
                  absl::StrCat("'", input.id, "' masked with ", peers,
                               " peers; at least ", threshold_ - 1));
  }
  inputs_[input.id] = input;
  for (const std::string& x : excluded) accused_.emplace(x, input.id);
  return absl::OkStatus();
}

std::map<std::string, std::string> SecAggServer::Excluded() const {
  return accused_;
}

absl::StatusOr<SecAggUnmaskRequest> SecAggServer::UnmaskRequest() {
  std::set<std::string> survivors;
  for (const auto& [id, in] : inputs_) {
    if (!accused_.count(id)) survivors.insert(id);
  }
  const size_t usable = survivors.size();
  // A dropped peer held by 1 to threshold - 1 survivors strands its
  // holders' inputs: drop them too, until nothing changes.
  for (bool changed = true; changed;) {
    changed = false;
    for (const auto& [d, list] : shares_) {
      if (survivors.count(d)) continue;
      std::vector<std::string> holders;
      for (const std::string& s : survivors) {
        if (Holds(s, d)) holders.push_back(s);
      }
      if (!holders.empty() && static_cast<int>(holders.size()) < threshold_) {
        for (const std::string& s : holders) survivors.erase(s);
        changed = true;
      }
    }
  }
  SecAggRoster members;
  for (const auto& [id, e] : entries_) members.entries.push_back(e);
  if (std::optional<std::string> lone = LoneSurvivorLayer(members, survivors)) {
    // Survivors would refuse to unmask it (SecAggClient::Unmask).
    return absl::FailedPreconditionError(
        absl::StrCat("too_few_survivors: ", *lone));
  }
  if (static_cast<int>(survivors.size()) < threshold_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "too_few_survivors: ", inputs_.size(), " masked inputs, ",
        inputs_.size() - usable, " of them accused, ", usable - survivors.size(),
        " stranded; ", survivors.size(), " survivors, threshold ", threshold_));
  }
  unmasking_ = true;
  survivors_.assign(survivors.begin(), survivors.end());
  dropped_.clear();
  for (const auto& [id, list] : shares_) {
    if (!survivors.count(id)) dropped_.push_back(id);
  }
  SecAggUnmaskRequest r;
  r.round = round_;
  r.survivors = survivors_;
  r.dropped = dropped_;
  return r;
}

absl::Status SecAggServer::AddUnmaskResponse(
    const SecAggUnmaskResponse& response) {
  if (!unmasking_) return Refuse("malformed", "no unmask request yet");
  if (response.round != round_) {
    return Refuse("replayed", absl::StrCat("response of round ", response.round));
  }
  const std::string& r = response.id;
  if (!std::binary_search(survivors_.begin(), survivors_.end(), r)) {
    return Refuse("unknown_peer", absl::StrCat("response from '", r, "'"));
  }
  if (responses_.count(r)) {
    return Refuse("replayed", absl::StrCat("second response from '", r, "'"));
  }
  if (bad_responders_.count(r)) {
    return Refuse("bad_share", absl::StrCat("'", r,
                                            "' already returned a share that "
                                            "does not match its commitment"));
  }
  std::vector<std::string> held;
  for (const std::string& d : dropped_) {
    if (Holds(r, d)) held.push_back(d);
  }
  auto same_keys = [](const std::map<std::string, std::string>& m,
                      const std::vector<std::string>& ids) {
    if (m.size() != ids.size()) return false;
    for (const std::string& id : ids) {
      auto it = m.find(id);
      if (it == m.end() || it->second.size() != 32) return false;
    }
    return true;
  };
  if (!same_keys(response.self_mask_shares, survivors_) ||
      !same_keys(response.key_shares, held)) {
    return Refuse("malformed", absl::StrCat("response of '", r,
                                            "' does not match the request"));
  }
  auto check = [&](const std::map<std::string, std::string>& shares,
                   char kind) -> absl::Status {
    for (const auto& [peer, share] : shares) {
      if (peer == r) continue;  // its own share: no commitment (see Sums)
      const SecAggShare* dealt = Dealt(peer, r);
      if (dealt == nullptr ||
          ShareCommitment(round_, peer, r, kind, share) !=
              (kind == kKeyShare ? dealt->key_commitment
                                 : dealt->self_commitment)) {
        bad_responders_.insert(r);
        return Refuse("bad_share",
                      absl::StrCat("unmask share of '", peer, "' from '", r,
                                   "' does not match its commitment"));
      }
    }
    return absl::OkStatus();
  };
  if (absl::Status s = check(response.self_mask_shares, kSelfShare); !s.ok()) {
    return s;
  }
  if (absl::Status s = check(response.key_shares, kKeyShare); !s.ok()) {
    return s;
  }
  responses_[r] = response;
  return absl::OkStatus();
}

std::set<std::string> SecAggServer::BadDealers() const {
  return bad_dealers_;
}

std::map<std::string, std::vector<std::string>> SecAggServer::Accusations()
    const {
  std::map<std::string, std::vector<std::string>> out;
  for (const auto& [id, in] : inputs_) {
    if (!in.excluded.empty()) out[id] = in.excluded;
  }
  return out;
}

std::set<std::string> SecAggServer::BadResponders() const {
  return bad_responders_;
}

absl::StatusOr<std::vector<std::vector<uint32_t>>> SecAggServer::Sums() {
  if (static_cast<int>(responses_.size()) < threshold_) {
    return absl::FailedPreconditionError(
        absl::StrCat("too_few_survivors: ", responses_.size(),
                     " unmask responses, threshold ", threshold_));
  }
  auto index_of = [this](const std::string& id) {
    return static_cast<int>(std::lower_bound(order_.begin(), order_.end(), id) -
                            order_.begin()) +
           1;
  };
  const size_t t = static_cast<size_t>(threshold_);
  // Every accepted share except a survivor's own matched its commitment.
  std::map<std::string, Key32> seeds, keys;
  for (const std::string& j : survivors_) {
    std::vector<std::pair<int, std::string>> parts;
    for (const auto& [id, resp] : responses_) {
      if (id != j && parts.size() < t) {
        parts.push_back({index_of(id), resp.self_mask_shares.at(j)});
      }
    }
    const bool own = parts.size() < t && responses_.count(j);
    if (own) {
      parts.push_back({index_of(j), responses_.at(j).self_mask_shares.at(j)});
    }
    if (parts.size() < t) {
      return absl::FailedPreconditionError(absl::StrCat(
          "too_few_survivors: ", parts.size(), " shares of the self-mask seed of '",
          j, "', threshold ", threshold_));
    }
    seeds[j] = Combine(parts);
    if (Hash(AsString(seeds[j])) != Find(j)->advert.commitment) {
      // Shares that each match their commitments but rebuild another seed:
      // the dealer's doing (or, with its own share used, its response's).
      if (own) {
        bad_responders_.insert(j);
      } else {
        bad_dealers_.insert(j);
      }
      return Refuse("bad_share", absl::StrCat("the self-mask seed of '", j,
                                              "' does not match its commitment"));
    }
  }
  for (const std::string& d : dropped_) {
    const bool masked = std::any_of(
        survivors_.begin(), survivors_.end(),
        [&](const std::string& s) { return Holds(s, d); });
    if (!masked) continue;
    std::vector<std::pair<int, std::string>> parts;
    for (const auto& [id, resp] : responses_) {
      auto it = resp.key_shares.find(d);
      if (it != resp.key_shares.end() && parts.size() < t) {
        parts.push_back({index_of(id), it->second});
      }
    }
    if (parts.size() < t) {
      return absl::FailedPreconditionError(
          absl::StrCat("too_few_survivors: ", parts.size(), " key shares of '",
                       d, "' returned, threshold ", threshold_));
    }
    keys[d] = Combine(parts);
    Key32 pk;
    crypto_scalarmult_base(pk.data(), keys[d].data());
    if (pk != Find(d)->advert.mask_pk) {
      bad_dealers_.insert(d);
      return Refuse("bad_share", absl::StrCat("the key of '", d,
                                              "' does not match its advert"));
    }
  }
  std::vector<std::vector<uint32_t>> sums(layer_sizes_.size());
  for (const std::string& j : survivors_) {
    const SecAggRosterEntry& e = *Find(j);
    const SecAggMaskedInput& in = inputs_.at(j);
    for (size_t i = 0; i < e.layers.size(); ++i) {
      std::vector<uint32_t>& acc = sums[e.layers[i]];
      if (acc.empty()) acc.assign(layer_sizes_[e.layers[i]], 0);
      for (size_t k = 0; k < acc.size(); ++k) acc[k] += in.layers[i][k];
      AddMask(acc, seeds[j], round_, e.layers[i], true);
    }
  }
  // Survivor j added +-PRG(s_jd) for every dropped d it held sharing a
  // layer: take it back out with s_jd rebuilt from d's key.
  for (const auto& [d, key] : keys) {
    const SecAggRosterEntry& de = *Find(d);
    for (const std::string& j : survivors_) {
      if (!Holds(j, d)) continue;
      const SecAggRosterEntry& je = *Find(j);
      std::optional<Key32> seed =
          PairSeed(key, d, de.advert.mask_pk, j, je.advert.mask_pk);
      if (!seed) return Refuse("malformed", "degenerate key");
      for (int layer : je.layers) {
        if (!std::binary_search(de.layers.begin(), de.layers.end(), layer)) {
          continue;
        }
        // j added its mask with sign + when j < d: undo it.
        AddMask(sums[layer], *seed, round_, layer, j < d);
      }
    }
  }
  return sums;
}

std::vector<int> SecAggServer::SurvivorsPerLayer() const {
  std::vector<int> n(layer_sizes_.size(), 0);
  auto count = [&](const std::string& id) {
    for (int layer : Find(id)->layers) ++n[layer];
  };
  if (unmasking_) {
    for (const std::string& id : survivors_) count(id);
  } else {
    for (const auto& [id, in] : inputs_) {
      if (!accused_.count(id)) count(id);
    }
  }
  return n;
}

double SecAggScale(double range, int max_summands) {
  if (!(range > 0) || max_summands < 1) return 0;
  const double per = (2147483647.0 / max_summands - 1) / range;
  return per >= 1 ? std::floor(per) : 0;
}

std::vector<uint32_t> SecAggQuantize(const std::vector<float>& values,
                                     double range, double scale,
                                     const Key32& rounding_key) {
  GaussianSource bits(rounding_key);
  std::vector<uint32_t> out(values.size());
  for (size_t k = 0; k < values.size(); ++k) {
    double v = values[k];
    if (!(v >= -range)) v = -range;  // NaN counts as -range
    if (v > range) v = range;
    const double x = v * scale;
    const double lo = std::floor(x);
    const int64_t q = static_cast<int64_t>(lo) + (bits.Uniform() < x - lo ? 1 : 0);
    out[k] = static_cast<uint32_t>(q);
  }
  return out;
}

std::vector<double> SecAggDequantize(const std::vector<uint32_t>& sum,
                                     double scale) {
  std::vector<double> out(sum.size());
  for (size_t k = 0; k < sum.size(); ++k) {
    out[k] = static_cast<int32_t>(sum[k]) / scale;
  }
  return out;
}

std::string SecAggAdvertMessage(const SecAggAdvert& advert) {
  std::string m = "lfsa-advert1";
  const uint64_t round = static_cast<uint64_t>(advert.round);
  const uint64_t len = advert.id.size();
  m.append(reinterpret_cast<const char*>(&round), sizeof(round));
  m.append(reinterpret_cast<const char*>(&len), sizeof(len));
  m += advert.id;
  m += AsString(advert.enc_pk);
  m += AsString(advert.mask_pk);
  m += AsString(advert.commitment);
  return m;
}

absl::StatusOr<SecAggIdentity> ParseSecAggIdentity(
    const std::string& id, const std::string& key_text,
    const std::string& key_source, const std::string& peers_text,
    const std::string& peers_source) {
  InitCrypto();
  const auto hex32 = [](absl::string_view text, Key32* out) {
    size_t got = 0;
    const std::string hex(absl::StripAsciiWhitespace(text));
    return sodium_hex2bin(out->data(), out->size(), hex.data(), hex.size(),
                          nullptr, &got, nullptr) == 0 &&
           got == out->size();
  };
  Key32 seed{};
  if (!hex32(key_text, &seed)) {
    return absl::InvalidArgumentError(absl::StrCat(
        key_source, ": expected a 32-byte Ed25519 seed as 64 hex digits"));
  }
  SecAggIdentity identity;
  Key32 own{};
  crypto_sign_seed_keypair(own.data(), identity.secret_key.data(), seed.data());
  sodium_memzero(seed.data(), seed.size());
  // "client_id hex_key" lines, parsed as a tokens file is.
  ASSIGN_OR_RETURN(const auto keys, ParseClientTokens(peers_text, peers_source));
  for (const auto& [peer, hex] : keys) {
    Key32 pk{};
    if (!hex32(hex, &pk)) {
      return absl::InvalidArgumentError(absl::StrCat(
          peers_source, ": client '", peer,
          "': expected a public key of 64 hex digits"));
    }
    identity.peers.emplace(peer, pk);
  }
  auto mine = identity.peers.find(id);
  if (mine == identity.peers.end() || mine->second != own) {
    return absl::InvalidArgumentError(absl::StrCat(
        peers_source, ": does not list '", id, "' with the public key of ",
        key_source));
  }
  return identity;
}

int SecAggMinThreshold(int n) { return n / 2 + 1; }

}  // namespace layerfl

#ifndef LAYERFL_COMMON_SECAGG_SECAGG_H_
#define LAYERFL_COMMON_SECAGG_SECAGG_H_

// Dropout-tolerant secure aggregation over sparse per-layer updates, after
// Bonawitz et al. 2017 ("Practical Secure Aggregation for Privacy-Preserving
// Machine Learning"), with LayerFL's twist: each layer is masked among the
// clients that trained it (the participant sets are public after selection),
// so layers nobody trained cost nothing and every layer's masks cancel in its
// own sum. The coordinator learns each layer's sum over its surviving
// participants and nothing else about an individual update (threat model in
// the README: honest-but-curious coordinator, fewer than `threshold`
// colluding clients).
//
// One round, transport-free (the round engine and the daemons carry the
// messages):
//   1. Advertise: each client sends two X25519 public keys (one to encrypt
//      shares, one for mask agreement) and a commitment to its self-mask
//      seed. The server collects them with each client's layer set into a
//      Roster.
//   2. ShareKeys: each client splits its mask-agreement secret key and its
//      self-mask seed into Shamir `threshold`-of-n shares (libgfshare over
//      GF(2^8); n <= 255) and sends share k to roster member k, encrypted and
//      authenticated to it (crypto_box: X25519 + XSalsa20-Poly1305) and
//      bound to (round, sender, recipient). The server relays them.
//   3. Mask: each client that holds the shares of the others adds, per
//      trained layer l, its self mask PRG(b_i, l) and for every other sharer
//      j that trained l the pairwise mask +-PRG(s_ij, l) (s_ij from X25519
//      key agreement, + when id_i < id_j) to its quantized layer, mod 2^32.
//      PRG: ChaCha20 (IETF) keyed by BLAKE2b(seed, round, layer).
//   4. Unmask: the server names the survivors (masked input received) and
//      the dropped (shared keys, sent no input). Each survivor returns the
//      self-mask share of every survivor and the key share of every dropped
//      client, never both for one peer (a server that lies about who dropped
//      learns nothing). From `threshold` responses the server rebuilds the
//      seeds, checks them against the advertised keys and commitments,
//      removes the masks and reads each layer's sum.
//
// Every primitive is libsodium's (X25519, crypto_box, ChaCha20, BLAKE2b,
// randombytes) or libgfshare's (Shamir over GF(2^8), fed by randombytes). No
// home-made cipher or random source.
//
// Refusals name their reason first: "malformed: ...", "replayed: ...",
// "unknown_peer: ...", "double_reveal: ...", "too_few_survivors: ...",
// "bad_share: ...". A refused message changes nothing.
//
// Not thread-safe; one object per client per round, one server per round.

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace layerfl {

using Key32 = std::array<unsigned char, 32>;

struct SecAggAdvert {
  std::string id;
  int64_t round = 0;
  Key32 enc_pk{};     // crypto_box public key (share encryption)
  Key32 mask_pk{};    // X25519 public key (pairwise masks)
  Key32 commitment{};  // BLAKE2b of the self-mask seed
};

struct SecAggRosterEntry {
  SecAggAdvert advert;
  std::vector<int> layers;  // indices of the layers it trains, ascending
};

// Everything a client needs to share and mask: the round, the threshold,
// every layer's length and the participants in id order. Share k (1-based)
// goes to entries[k-1].
struct SecAggRoster {
  int64_t round = 0;
  int threshold = 0;
  // How every participant quantizes (SecAggQuantize): values clipped to
  // [-value_range, value_range], multiplied by `scale`.
  double value_range = 1.0;
  double scale = 0;
  std::vector<int64_t> layer_sizes;  // values per layer, all model layers
  std::vector<SecAggRosterEntry> entries;
};

struct SecAggShare {
  std::string from, to;
  std::string ciphertext;  // nonce || crypto_box_easy(plaintext)
};

struct SecAggMaskedInput {
  std::string id;
  int64_t round = 0;
  // One entry per layer the client trains, in its roster order.
  std::vector<std::vector<uint32_t>> layers;
};

struct SecAggUnmaskRequest {
  int64_t round = 0;
  std::vector<std::string> survivors;
  std::vector<std::string> dropped;
};

struct SecAggUnmaskResponse {
  std::string id;
  int64_t round = 0;
  std::map<std::string, std::string> self_mask_shares;  // survivor -> share
  std::map<std::string, std::string> key_shares;        // dropped -> share
};

class SecAggClient {
 public:
  // Fresh keys and self-mask seed from the operating system's CSPRNG.
  SecAggClient(std::string id, int64_t round);
  ~SecAggClient();
  SecAggClient(const SecAggClient&) = delete;
  SecAggClient& operator=(const SecAggClient&) = delete;

  const std::string& id() const { return id_; }
  SecAggAdvert Advertise() const;

  // Checks the roster (this round, this client in it with its own keys,
  // distinct ids, 2 <= threshold <= n <= 255, layer indices valid) and
  // returns one encrypted share for every other entry.
  absl::StatusOr<std::vector<SecAggShare>> ShareKeys(const SecAggRoster& roster);

  // Decrypts the shares relayed to this client (each must come from a
  // roster member, be addressed here, be bound to this round and appear
  // once), then masks `quantized` (one vector per trained layer, the
  // roster's lengths). Peers whose share did not arrive are left out of the
  // pairwise masks, as the server leaves them out of the sums.
  absl::StatusOr<SecAggMaskedInput> Mask(
      const std::vector<SecAggShare>& received,
      const std::vector<std::vector<uint32_t>>& quantized);

  // The shares the server asks for; refuses a peer named both survivor and
  // dropped, in this request or across requests, names it did not share
  // with, fewer survivors than the threshold, or a request that does not
  // list this client as a survivor.
  absl::StatusOr<SecAggUnmaskResponse> Unmask(
      const SecAggUnmaskRequest& request);

 private:
  struct Held {
    std::string key_share, self_share;  // 32 bytes each
  };

  std::string id_;
  int64_t round_;
  Key32 enc_pk_{}, enc_sk_{}, mask_pk_{}, mask_sk_{}, seed_{};
  std::unique_ptr<SecAggRoster> roster_;
  int my_index_ = -1;
  std::map<std::string, Held> held_;  // peer (and self) -> its shares
  bool masked_ = false;
  std::set<std::string> revealed_self_, revealed_key_;
};

class SecAggServer {
 public:
  // `value_range`: the clip of every value before quantization; the scale
  // follows from it and the number of participants (SecAggScale).
  SecAggServer(int64_t round, int threshold, std::vector<int64_t> layer_sizes,
               double value_range = 1.0);

  // Phase 1. `layers`: the layer indices the client trains.
  absl::Status AddAdvert(const SecAggAdvert& advert, std::vector<int> layers);
  // Fixes the roster, entries in id order; `threshold` > 0 replaces the one
  // given at construction (a round sizes it by who advertised).
  // FailedPrecondition with fewer entries than the threshold.
  absl::StatusOr<SecAggRoster> Roster(int threshold = 0);

  // Phase 2: `from`'s shares, one for every other roster member.
  absl::Status AddShares(const std::string& from,
                         const std::vector<SecAggShare>& shares);
  // What to relay to `id` (from every member that shared).
  std::vector<SecAggShare> SharesFor(const std::string& id) const;

  // Phase 3: from a member that shared, once, with its layers' lengths.
  absl::Status AddMaskedInput(const SecAggMaskedInput& input);

  // Phase 4. too_few_survivors (FailedPrecondition) when fewer than
  // `threshold` sent their input: the round must be abandoned.
  absl::StatusOr<SecAggUnmaskRequest> UnmaskRequest();
  absl::Status AddUnmaskResponse(const SecAggUnmaskResponse& response);

  // Each layer's sum over its surviving participants (mod 2^32), empty for
  // layers none of them trained, and how many survivors trained it. Needs
  // `threshold` unmask responses.
  absl::StatusOr<std::vector<std::vector<uint32_t>>> Sums();
  std::vector<int> SurvivorsPerLayer() const;

 private:
  const SecAggRosterEntry* Find(const std::string& id) const;

  int64_t round_;
  int threshold_;
  std::vector<int64_t> layer_sizes_;
  double value_range_;
  std::map<std::string, SecAggRosterEntry> entries_;
  bool roster_fixed_ = false;
  std::vector<std::string> order_;  // roster order (ids sorted)
  std::map<std::string, std::vector<SecAggShare>> shares_;  // by sender
  std::map<std::string, SecAggMaskedInput> inputs_;
  bool unmasking_ = false;
  std::vector<std::string> survivors_, dropped_;
  std::map<std::string, SecAggUnmaskResponse> responses_;
};

// Fixed-point quantization into Z_2^32 with headroom for `max_summands`
// values: each value is clipped to [-range, range], multiplied by
// scale = floor((2^31 - 1) / (max_summands * range)) and rounded
// stochastically (up with probability equal to the fraction, so the
// expectation is exact), then stored as two's complement. The sum of up to
// `max_summands` such numbers never wraps, so it decodes exactly.
double SecAggScale(double range, int max_summands);
std::vector<uint32_t> SecAggQuantize(const std::vector<float>& values,
                                     double range, double scale,
                                     const Key32& rounding_key);
// The sum, read back as signed integers divided by the scale.
std::vector<double> SecAggDequantize(const std::vector<uint32_t>& sum,
                                     double scale);

}  // namespace layerfl

#endif  // LAYERFL_COMMON_SECAGG_SECAGG_H_

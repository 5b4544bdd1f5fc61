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
// colluding clients). Clients that deviate from the protocol lose their place
// in the round instead of ending it (see "Active clients" below).
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
//      bound to (round, sender, recipient). Beside each ciphertext, in the
//      clear, it commits to the two plaintext shares it holds (BLAKE2b-256
//      over a domain tag, the round, the dealer, the recipient, the kind and
//      the share). The server keeps the commitments and relays the shares.
//   3. Mask: each client opens the shares relayed to it. A share that does
//      not authenticate, is not bound to (this round, its sender, this
//      client), has the wrong length or does not match its sender's
//      commitments excludes its sender: the client leaves it out of its
//      pairwise masks and names it in SecAggMaskedInput::excluded. Fewer
//      than `threshold` - 1 peers left: the client refuses to mask
//      (too_few_shares), so no input leaves it masked by fewer. Otherwise it
//      adds, per trained layer l, its self mask PRG(b_i, l) and for every
//      included peer j that trained l the pairwise mask +-PRG(s_ij, l)
//      (s_ij from X25519 key agreement, + when id_i < id_j) to its quantized
//      layer, mod 2^32. PRG: ChaCha20 (IETF) keyed by BLAKE2b(seed, round,
//      layer).
//   4. Unmask: every id excluded by an accepted input is accused and counts
//      as dropped (its own input, early or late, is not used). Survivors:
//      the members whose input arrived and who are not accused. A survivor
//      S holds a dropped peer D's key share, and masked with D, unless S
//      excluded D. When a dropped D is held by some but fewer than
//      `threshold` survivors, D's key could never be rebuilt: those holders
//      are dropped as well (their pairwise masks come out through their own
//      key shares), until nothing changes. Each survivor returns the
//      self-mask share of every survivor and the key share of every dropped
//      peer it holds, never both for one peer (a server that lies about who
//      dropped learns nothing). The server checks each returned share
//      against the commitment its dealer made for that responder and
//      refuses the whole response of a responder caught lying; secrets are
//      rebuilt from checked shares only (a survivor's own share of its own
//      seed has no commitment: it is used only when fewer than `threshold`
//      others returned one, and then a wrong seed is blamed on it), checked
//      again against the advertised keys and seed commitments, and the
//      masks removed to read each layer's sum.
//
// Active clients: an advert with a low-order key is refused; a client that
// deals undecryptable or mismatched shares is excluded by whoever received
// them and dropped by the server; one that returns a share unlike its
// dealer's commitment has that response refused (BadResponders) while its
// own input stays in the sums if it survived. An accusation is taken on
// trust, so a lying client can have honest peers dropped (costing their
// updates, never their privacy); the sums stay exact over the survivors the
// server names, and the round ends (too_few_survivors) only when fewer than
// `threshold` remain. Out of scope: a dealer whose shares match its
// commitments but do not lie on one polynomial through its advertised key
// or seed (caught when the secret is rebuilt, which then fails the round;
// needs verifiable secret sharing); a client whose input or exclusion list
// is not what it computed (it can always spoil the sums: nothing validates
// inputs); and a coordinator that forges adverts or tells clients different
// stories (adverts are not signed and there is no consistency round).
//
// Every primitive is libsodium's (X25519, crypto_box, ChaCha20, BLAKE2b,
// randombytes) or libgfshare's (Shamir over GF(2^8), fed by randombytes). No
// home-made cipher or random source.
//
// Refusals name their reason first: "malformed: ...", "replayed: ...",
// "unknown_peer: ...", "double_reveal: ...", "too_few_survivors: ...",
// "too_few_shares: ...", "bad_share: ...". A refused message changes
// nothing, except that the server records the sender of an unmask response
// refused as bad_share in BadResponders().
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
  // Ed25519 signature by the client's identity key over the fields above
  // (SecAggAdvertMessage); "" = unsigned (no identities configured).
  std::string signature;
};

// Long-term identities (Bonawitz et al.'s malicious-security variant): a
// client signs its adverts with its Ed25519 key, and checks every roster
// entry's signature against the public keys its operator gave it (never
// taken from the coordinator), so that a coordinator cannot substitute a
// peer's keys. With an identity a client refuses a roster entry that is
// unsigned, signed by another key, or of an id it has no key for.
struct SecAggIdentity {
  std::array<unsigned char, 64> secret_key{};  // crypto_sign secret key
  std::map<std::string, Key32> peers;          // id -> Ed25519 public key
};

// An identity from its files' texts: `key_text` the 32-byte Ed25519 seed
// as 64 hex digits; `peers_text` one "client_id hex_public_key" a line (#
// comments; parsed as a tokens file, ParseClientTokens), which must include
// this client's own (checked against the seed). InvalidArgument naming the
// source, and the line or the client.
absl::StatusOr<SecAggIdentity> ParseSecAggIdentity(
    const std::string& id, const std::string& key_text,
    const std::string& key_source, const std::string& peers_text,
    const std::string& peers_source);

// The smallest threshold a client accepts for a roster of n: a majority
// (floor(n/2) + 1), so that no two disjoint sets of t clients exist.
int SecAggMinThreshold(int n);

// What an advert's signature covers: a tag, the round, the id and the
// three keys.
std::string SecAggAdvertMessage(const SecAggAdvert& advert);

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
  // The dealer's commitments to the key share and the self-mask share inside
  // `ciphertext` (clear text, kept by the server to check unmask responses).
  Key32 key_commitment{}, self_commitment{};
};

struct SecAggMaskedInput {
  std::string id;
  int64_t round = 0;
  // One entry per layer the client trains, in its roster order.
  std::vector<std::vector<uint32_t>> layers;
  // Peers whose share did not open (sorted ids): left out of the pairwise
  // masks, and dropped by the server. Empty by default.
  std::vector<std::string> excluded;
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
  // With `identity` the adverts are signed and the roster's checked.
  SecAggClient(std::string id, int64_t round,
               std::shared_ptr<const SecAggIdentity> identity = nullptr);
  ~SecAggClient();
  SecAggClient(const SecAggClient&) = delete;
  SecAggClient& operator=(const SecAggClient&) = delete;

  const std::string& id() const { return id_; }
  SecAggAdvert Advertise() const;

  // Checks the roster (this round, this client in it with its own keys,
  // distinct ids, 2 <= threshold <= n <= 255, layer indices valid) and
  // returns one encrypted, committed share for every other entry.
  absl::StatusOr<std::vector<SecAggShare>> ShareKeys(const SecAggRoster& roster);

  // Opens the shares relayed to this client, then masks `quantized` (one
  // vector per trained layer, the roster's lengths). The relay's mistakes
  // refuse the call: a share from outside the roster or from this client
  // (unknown_peer), addressed elsewhere (malformed), a sender twice
  // (replayed). The sender's do not: a share that does not authenticate,
  // is bound to another round or pair, has the wrong length or does not
  // match its commitments puts its sender in `excluded`. Excluded peers and
  // peers whose share did not arrive are left out of the pairwise masks.
  // FailedPrecondition "too_few_shares: ..." when fewer than threshold - 1
  // peers remain; then nothing changes and the call may be repeated.
  absl::StatusOr<SecAggMaskedInput> Mask(
      const std::vector<SecAggShare>& received,
      const std::vector<std::vector<uint32_t>>& quantized);

  // The shares the server asks for; refuses a peer named both survivor and
  // dropped, in this request or across requests, a survivor whose share it
  // does not hold, names outside the roster, fewer survivors than the
  // threshold, or a request that does not list this client as a survivor.
  // A dropped peer it excluded or never got a share from gets no key share.
  absl::StatusOr<SecAggUnmaskResponse> Unmask(
      const SecAggUnmaskRequest& request);

 private:
  struct Held {
    std::string key_share, self_share;  // 32 bytes each
  };

  std::string id_;
  int64_t round_;
  std::shared_ptr<const SecAggIdentity> identity_;
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

  // Phase 1. `layers`: the layer indices the client trains. An advert with a
  // low-order key (no key agreement possible) is malformed.
  absl::Status AddAdvert(const SecAggAdvert& advert, std::vector<int> layers);
  // Fixes the roster, entries in id order; `threshold` > 0 replaces the one
  // given at construction (a round sizes it by who advertised).
  // `summands` > the roster's size sizes the scale's headroom for that many
  // participants instead (a replay repeating a recorded round whose roster
  // was larger; more headroom never wraps). FailedPrecondition with fewer
  // entries than the threshold.
  absl::StatusOr<SecAggRoster> Roster(int threshold = 0, int summands = 0);

  // Phase 2: `from`'s shares, one for every other roster member.
  absl::Status AddShares(const std::string& from,
                         const std::vector<SecAggShare>& shares);
  // What to relay to `id` (from every member that shared).
  std::vector<SecAggShare> SharesFor(const std::string& id) const;

  // Phase 3: from a member that shared, once, with its layers' lengths.
  // `excluded` must name distinct members that shared, not the sender, and
  // leave it at least threshold - 1 peers (else malformed); each becomes
  // accused.
  absl::Status AddMaskedInput(const SecAggMaskedInput& input);
  // Accused id -> the first accepted input that excluded it. Accused clients
  // are dropped for the round whether or not their input arrived.
  std::map<std::string, std::string> Excluded() const;

  // Phase 4. Closes the inputs; survivors and dropped as in the header
  // comment (a survivor whose input cannot be unmasked because too few
  // survivors hold a dropped peer's key is dropped too). too_few_survivors
  // (FailedPrecondition, nothing changes) when fewer than `threshold`
  // survivors remain: the round must be abandoned.
  absl::StatusOr<SecAggUnmaskRequest> UnmaskRequest();
  // From a survivor, once: the self-mask share of every survivor and the
  // key share of every dropped peer it did not exclude (else malformed).
  // A share unlike the commitment its dealer made for the responder refuses
  // the whole response (bad_share) and adds the responder to
  // BadResponders(); its later responses are refused as well.
  absl::Status AddUnmaskResponse(const SecAggUnmaskResponse& response);
  // Survivors or dropped clients whose secret, rebuilt from shares that
  // each matched their commitments, is not the one their advert committed
  // to: they dealt inconsistent shares. Filled by Sums().
  std::set<std::string> BadDealers() const;
  // Every accepted masked input's exclusions: accuser -> the peers it
  // excluded.
  std::map<std::string, std::vector<std::string>> Accusations() const;
  std::set<std::string> BadResponders() const;

  // Each layer's sum over its surviving participants (mod 2^32), empty for
  // layers none of them trained, and how many survivors trained it (before
  // UnmaskRequest: the inputs of clients not accused). Needs `threshold`
  // accepted unmask responses and, for every dropped peer some survivor
  // masked with, `threshold` of them holding its key share
  // (too_few_survivors); bad_share when a rebuilt secret does not match its
  // advert (a survivor whose own uncommitted seed share was needed for it is
  // then added to BadResponders()).
  absl::StatusOr<std::vector<std::vector<uint32_t>>> Sums();
  std::vector<int> SurvivorsPerLayer() const;

 private:
  const SecAggRosterEntry* Find(const std::string& id) const;
  // The share `dealer` sent to `to`; null if none.
  const SecAggShare* Dealt(const std::string& dealer,
                           const std::string& to) const;
  // Whether survivor `s` masked with `d` and holds its shares: both shared,
  // s sent its input and did not exclude d.
  bool Holds(const std::string& s, const std::string& d) const;

  int64_t round_;
  int threshold_;
  std::vector<int64_t> layer_sizes_;
  double value_range_;
  std::map<std::string, SecAggRosterEntry> entries_;
  bool roster_fixed_ = false;
  std::vector<std::string> order_;  // roster order (ids sorted)
  std::map<std::string, std::vector<SecAggShare>> shares_;  // by sender
  std::map<std::string, SecAggMaskedInput> inputs_;
  std::map<std::string, std::string> accused_;  // accused -> first accuser
  bool unmasking_ = false;
  std::vector<std::string> survivors_, dropped_;  // sorted
  std::map<std::string, SecAggUnmaskResponse> responses_;
  std::set<std::string> bad_responders_;
  std::set<std::string> bad_dealers_;
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

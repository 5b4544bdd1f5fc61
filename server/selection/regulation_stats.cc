#include "server/selection/regulation_stats.h"

#include <cmath>
#include <cstring>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"

namespace layerfl {
namespace {

constexpr char kMagic[4] = {'L', 'F', 'R', 'S'};
constexpr uint32_t kVersion = 1;

uint64_t Fnv1a(absl::string_view bytes) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

class Writer {
 public:
  void U8(uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void U32(uint32_t v) { Le(v, 4); }
  void U64(uint64_t v) { Le(v, 8); }
  void I64(int64_t v) { Le(static_cast<uint64_t>(v), 8); }
  void F64(double v) {
    uint64_t bits;
    std::memcpy(&bits, &v, 8);
    Le(bits, 8);
  }
  void Bytes(absl::string_view s) { out_.append(s.data(), s.size()); }
  std::string& out() { return out_; }

 private:
  void Le(uint64_t v, int n) {
    for (int k = 0; k < n; ++k) out_.push_back(static_cast<char>(v >> (8 * k)));
  }
  std::string out_;
};

class Reader {
 public:
  explicit Reader(absl::string_view in) : in_(in) {}
  bool U8(uint8_t* v) {
    uint64_t x;
    if (!Le(1, &x)) return false;
    *v = static_cast<uint8_t>(x);
    return true;
  }
  bool U32(uint32_t* v) {
    uint64_t x;
    if (!Le(4, &x)) return false;
    *v = static_cast<uint32_t>(x);
    return true;
  }
  bool U64(uint64_t* v) { return Le(8, v); }
  bool I64(int64_t* v) {
    uint64_t x;
    if (!Le(8, &x)) return false;
    *v = static_cast<int64_t>(x);
    return true;
  }
  bool F64(double* v) {
    uint64_t x;
    if (!Le(8, &x)) return false;
    std::memcpy(v, &x, 8);
    return true;
  }
  bool Bytes(size_t n, absl::string_view* s) {
    if (in_.size() - pos_ < n) return false;
    *s = in_.substr(pos_, n);
    pos_ += n;
    return true;
  }
  size_t pos() const { return pos_; }

 private:
  bool Le(int n, uint64_t* v) {
    if (in_.size() - pos_ < static_cast<size_t>(n)) return false;
    *v = 0;
    for (int k = 0; k < n; ++k) {
      *v |= static_cast<uint64_t>(static_cast<unsigned char>(in_[pos_ + k]))
            << (8 * k);
    }
    pos_ += n;
    return true;
  }
  absl::string_view in_;
  size_t pos_ = 0;
};

absl::Status ValidateNames(const std::vector<std::string>& names) {
  absl::flat_hash_set<absl::string_view> seen;
  for (const std::string& name : names) {
    if (name.empty()) {
      return absl::InvalidArgumentError("regulation stats: empty layer name");
    }
    if (!seen.insert(name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("regulation stats: duplicate layer '", name, "'"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<RegulationStats> RegulationStats::Create(
    std::vector<std::string> layer_names, double decay) {
  if (!(decay >= 0 && decay < 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("regulation stats: decay must be in [0, 1), got ", decay));
  }
  if (absl::Status s = ValidateNames(layer_names); !s.ok()) return s;
  RegulationStats stats;
  stats.names_ = std::move(layer_names);
  stats.decay_ = decay;
  const size_t n = stats.names_.size();
  stats.counts_.assign(n, 0);
  stats.last_counts_.assign(n, 0);
  stats.importance_.assign(n, 0.0);
  return stats;
}

absl::Status RegulationStats::Update(const SelectionInput& input,
                                     const SelectionResult& result) {
  const size_t num_layers = names_.size();
  if (input.layers.size() != num_layers) {
    return absl::InvalidArgumentError(
        absl::StrCat("regulation stats: ", num_layers, " layers, input has ",
                     input.layers.size()));
  }
  for (size_t l = 0; l < num_layers; ++l) {
    if (input.layers[l].name != names_[l]) {
      return absl::InvalidArgumentError(
          absl::StrCat("regulation stats: layer ", l, " is '", names_[l],
                       "', input has '", input.layers[l].name, "'"));
    }
  }
  if (result.layers.size() != input.clients.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("regulation stats: result has ", result.layers.size(),
                     " clients, input has ", input.clients.size()));
  }
  std::vector<int> counts(num_layers, 0);
  for (size_t i = 0; i < result.layers.size(); ++i) {
    for (int l : result.layers[i]) {
      if (l < 0 || static_cast<size_t>(l) >= num_layers) {
        return absl::InvalidArgumentError(
            absl::StrCat("regulation stats: client '", input.clients[i].id,
                         "' has layer index ", l, " out of range"));
      }
      ++counts[l];
    }
  }
  std::vector<double> mean(num_layers, 0.0);
  double total_weight = 0;
  bool any_samples = false;
  for (const ClientInput& c : input.clients) {
    any_samples = any_samples || (!c.sq_grad_norm.empty() && c.num_samples > 0);
  }
  for (const ClientInput& c : input.clients) {
    if (c.sq_grad_norm.empty()) continue;
    if (c.sq_grad_norm.size() != num_layers) {
      return absl::InvalidArgumentError(absl::StrCat(
          "regulation stats: client '", c.id, "' has ", c.sq_grad_norm.size(),
          " scores for ", num_layers, " layers"));
    }
    const double w = any_samples ? static_cast<double>(c.num_samples) : 1.0;
    for (size_t l = 0; l < num_layers; ++l) {
      if (!std::isfinite(c.sq_grad_norm[l]) || c.sq_grad_norm[l] < 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "regulation stats: client '", c.id, "' layer '", names_[l],
            "': score must be finite and >= 0, got ", c.sq_grad_norm[l]));
      }
      mean[l] += w * c.sq_grad_norm[l];
    }
    total_weight += w;
  }

  ++rounds_;
  client_rounds_ += static_cast<int64_t>(input.clients.size());
  for (size_t l = 0; l < num_layers; ++l) counts_[l] += counts[l];
  last_counts_ = counts;
  if (total_weight > 0) {
    for (size_t l = 0; l < num_layers; ++l) {
      const double m = mean[l] / total_weight;
      importance_[l] =
          has_importance_ ? decay_ * importance_[l] + (1 - decay_) * m : m;
    }
    has_importance_ = true;
  }
  return absl::OkStatus();
}

std::vector<double> RegulationStats::SelectionFrequency() const {
  std::vector<double> f(counts_.size(), 0.0);
  if (client_rounds_ == 0) return f;
  for (size_t l = 0; l < counts_.size(); ++l) {
    f[l] =
        static_cast<double>(counts_[l]) / static_cast<double>(client_rounds_);
  }
  return f;
}

std::string RegulationStats::Serialize() const {
  Writer w;
  w.Bytes(absl::string_view(kMagic, 4));
  w.U32(kVersion);
  w.F64(decay_);
  w.I64(rounds_);
  w.I64(client_rounds_);
  w.U8(has_importance_ ? 1 : 0);
  w.U32(static_cast<uint32_t>(names_.size()));
  for (size_t l = 0; l < names_.size(); ++l) {
    w.U32(static_cast<uint32_t>(names_[l].size()));
    w.Bytes(names_[l]);
    w.I64(counts_[l]);
    w.I64(last_counts_[l]);
    w.F64(importance_[l]);
  }
  w.U64(Fnv1a(w.out()));
  return std::move(w.out());
}

absl::StatusOr<RegulationStats> RegulationStats::Deserialize(
    absl::string_view bytes) {
  const auto corrupt = [](absl::string_view what) {
    return absl::DataLossError(absl::StrCat("regulation stats: ", what));
  };
  if (bytes.size() < 12) return corrupt("truncated header");
  const absl::string_view body = bytes.substr(0, bytes.size() - 8);
  Reader tail(bytes.substr(bytes.size() - 8));
  uint64_t checksum = 0;
  tail.U64(&checksum);
  if (std::memcmp(bytes.data(), kMagic, 4) != 0) return corrupt("bad magic");
  if (checksum != Fnv1a(body)) return corrupt("checksum mismatch");

  Reader r(body);
  absl::string_view magic;
  uint32_t version = 0, num_layers = 0;
  uint8_t has_importance = 0;
  RegulationStats stats;
  if (!r.Bytes(4, &magic) || !r.U32(&version))
    return corrupt("truncated header");
  if (version != kVersion) {
    return corrupt(absl::StrCat("unsupported version ", version));
  }
  if (!r.F64(&stats.decay_) || !r.I64(&stats.rounds_) ||
      !r.I64(&stats.client_rounds_) || !r.U8(&has_importance) ||
      !r.U32(&num_layers)) {
    return corrupt("truncated header");
  }
  if (num_layers > body.size()) return corrupt("layer count exceeds data");
  for (uint32_t l = 0; l < num_layers; ++l) {
    uint32_t len = 0;
    absl::string_view name;
    int64_t count = 0, last = 0;
    double importance = 0;
    if (!r.U32(&len) || !r.Bytes(len, &name) || !r.I64(&count) ||
        !r.I64(&last) || !r.F64(&importance)) {
      return corrupt(absl::StrCat("truncated at layer ", l));
    }
    stats.names_.emplace_back(name);
    stats.counts_.push_back(count);
    stats.last_counts_.push_back(static_cast<int>(last));
    stats.importance_.push_back(importance);
  }
  if (r.pos() != body.size()) return corrupt("trailing bytes");
  stats.has_importance_ = has_importance != 0;
  if (!(stats.decay_ >= 0 && stats.decay_ < 1) || stats.rounds_ < 0 ||
      stats.client_rounds_ < 0) {
    return corrupt("field out of range");
  }
  if (absl::Status s = ValidateNames(stats.names_); !s.ok()) {
    return corrupt(s.message());
  }
  return stats;
}

}  // namespace layerfl

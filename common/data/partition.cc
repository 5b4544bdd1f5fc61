#include "common/data/partition.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "common/data/rng.h"
#include "common/util/status_macros.h"

namespace layerfl {
namespace {

absl::Status CheckClients(int64_t n, int num_clients) {
  if (num_clients < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_clients must be >= 1, got ", num_clients));
  }
  if (n < num_clients) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dataset size n = ", n, " is smaller than num_clients = ", num_clients,
        "; every client needs an example"));
  }
  return absl::OkStatus();
}

std::vector<int64_t> ShuffledRange(int64_t n, std::mt19937_64& rng) {
  std::vector<int64_t> v(n);
  std::iota(v.begin(), v.end(), int64_t{0});
  Shuffle(v, rng);
  return v;
}

void SortClients(Partition& p) {
  for (auto& indices : p.clients) std::sort(indices.begin(), indices.end());
}

}  // namespace

absl::StatusOr<Partition> PartitionIid(int64_t n, int num_clients,
                                       uint64_t seed) {
  RETURN_IF_ERROR(CheckClients(n, num_clients));
  std::mt19937_64 rng(seed);
  std::vector<int64_t> order = ShuffledRange(n, rng);
  Partition p;
  p.clients.resize(num_clients);
  const int64_t base = n / num_clients;
  const int64_t extra = n % num_clients;
  int64_t start = 0;
  for (int c = 0; c < num_clients; ++c) {
    int64_t size = base + (c < extra ? 1 : 0);
    p.clients[c].assign(order.begin() + start, order.begin() + start + size);
    start += size;
  }
  SortClients(p);
  return p;
}

absl::StatusOr<Partition> PartitionDirichlet(const std::vector<int>& labels,
                                             int num_classes, int num_clients,
                                             double alpha, uint64_t seed) {
  if (num_classes < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_classes must be >= 1, got ", num_classes));
  }
  if (!(alpha > 0.0) || !std::isfinite(alpha)) {
    return absl::InvalidArgumentError(
        absl::StrCat("alpha must be a finite value > 0, got ", alpha));
  }
  const auto n = static_cast<int64_t>(labels.size());
  RETURN_IF_ERROR(CheckClients(n, num_clients));
  std::vector<std::vector<int64_t>> by_class(num_classes);
  for (int64_t i = 0; i < n; ++i) {
    if (labels[i] < 0 || labels[i] >= num_classes) {
      return absl::InvalidArgumentError(
          absl::StrCat("labels[", i, "] = ", labels[i], " is outside [0, ",
                       num_classes, ") (num_classes = ", num_classes, ")"));
    }
    by_class[labels[i]].push_back(i);
  }

  std::mt19937_64 rng(seed);
  Partition p;
  p.clients.resize(num_clients);
  std::vector<double> log_weights(num_clients);
  for (std::vector<int64_t>& members : by_class) {
    Shuffle(members, rng);
    // Normalised Dir(alpha) proportions from log-Gamma draws, scaled by the
    // largest so tiny alphas cannot underflow every weight to zero.
    for (double& w : log_weights) w = LogGamma(rng, alpha);
    const double max_log =
        *std::max_element(log_weights.begin(), log_weights.end());
    double total = 0.0;
    for (double& w : log_weights) {
      w = std::exp(w - max_log);
      total += w;
    }
    const auto m = static_cast<int64_t>(members.size());
    double cumulative = 0.0;
    int64_t start = 0;
    for (int c = 0; c < num_clients; ++c) {
      cumulative += log_weights[c];
      int64_t end =
          c + 1 == num_clients
              ? m
              : std::min<int64_t>(m, std::llround(cumulative / total *
                                                  static_cast<double>(m)));
      end = std::max(end, start);
      p.clients[c].insert(p.clients[c].end(), members.begin() + start,
                          members.begin() + end);
      start = end;
    }
  }

  SortClients(p);
  for (int c = 0; c < num_clients; ++c) {
    if (!p.clients[c].empty()) continue;
    int donor = 0;
    for (int d = 1; d < num_clients; ++d) {
      if (p.clients[d].size() > p.clients[donor].size()) donor = d;
    }
    p.clients[c].push_back(p.clients[donor].back());
    p.clients[donor].pop_back();
  }
  return p;
}

absl::StatusOr<Partition> PartitionFeatureShift(int64_t n, int num_clients,
                                                int num_domains,
                                                uint64_t seed) {
  if (num_domains < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_domains must be >= 1, got ", num_domains));
  }
  ASSIGN_OR_RETURN(Partition p, PartitionIid(n, num_clients, seed));
  p.domain.resize(num_clients);
  for (int c = 0; c < num_clients; ++c) p.domain[c] = c % num_domains;
  return p;
}

absl::StatusOr<Partition> PartitionByGroup(const std::vector<int>& groups,
                                           int num_groups, int num_clients,
                                           uint64_t seed) {
  if (num_groups < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_groups must be >= 1, got ", num_groups));
  }
  if (num_clients < num_groups) {
    return absl::InvalidArgumentError(absl::StrCat(
        "num_clients = ", num_clients, " is smaller than the ", num_groups,
        " groups; every group needs a client"));
  }
  std::vector<std::vector<int64_t>> members(num_groups);
  for (size_t i = 0; i < groups.size(); ++i) {
    if (groups[i] < 0 || groups[i] >= num_groups) {
      return absl::InvalidArgumentError(
          absl::StrCat("groups[", i, "] = ", groups[i], " is outside [0, ",
                       num_groups, ")"));
    }
    members[groups[i]].push_back(static_cast<int64_t>(i));
  }
  Partition p;
  p.clients.resize(num_clients);
  p.domain.resize(num_clients);
  for (int c = 0; c < num_clients; ++c) p.domain[c] = c % num_groups;
  std::mt19937_64 rng(seed);
  for (int g = 0; g < num_groups; ++g) {
    std::vector<int64_t>& order = members[g];
    const int64_t holders = (num_clients - g + num_groups - 1) / num_groups;
    const auto n = static_cast<int64_t>(order.size());
    if (n < holders) {
      return absl::InvalidArgumentError(absl::StrCat(
          "group ", g, " has ", n, " examples for its ", holders,
          " clients; every client needs an example"));
    }
    Shuffle(order, rng);
    const int64_t base = n / holders;
    const int64_t extra = n % holders;
    int64_t start = 0;
    for (int64_t k = 0; k < holders; ++k) {
      const int64_t size = base + (k < extra ? 1 : 0);
      p.clients[g + k * num_groups].assign(order.begin() + start,
                                           order.begin() + start + size);
      start += size;
    }
  }
  SortClients(p);
  return p;
}

absl::StatusOr<std::pair<std::vector<int64_t>, std::vector<int64_t>>>
SplitHoldout(int64_t n, double fraction, uint64_t seed) {
  if (n < 0) {
    return absl::InvalidArgumentError(absl::StrCat("n must be >= 0, got ", n));
  }
  if (!(fraction >= 0.0 && fraction < 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("fraction must be in [0, 1), got ", fraction));
  }
  std::mt19937_64 rng(seed);
  std::vector<int64_t> order = ShuffledRange(n, rng);
  const int64_t k =
      std::min<int64_t>(n, std::llround(static_cast<double>(n) * fraction));
  std::vector<int64_t> held(order.begin(), order.begin() + k);
  std::vector<int64_t> rest(order.begin() + k, order.end());
  std::sort(held.begin(), held.end());
  std::sort(rest.begin(), rest.end());
  return std::make_pair(std::move(held), std::move(rest));
}

absl::StatusOr<double> LabelEntropy(const std::vector<int>& labels,
                                    const std::vector<int64_t>& indices,
                                    int num_classes) {
  if (num_classes < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_classes must be >= 1, got ", num_classes));
  }
  std::vector<int64_t> counts(num_classes, 0);
  for (size_t k = 0; k < indices.size(); ++k) {
    const int64_t i = indices[k];
    if (i < 0 || i >= static_cast<int64_t>(labels.size())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "indices[", k, "] = ", i, " is outside [0, ", labels.size(), ")"));
    }
    if (labels[i] < 0 || labels[i] >= num_classes) {
      return absl::InvalidArgumentError(
          absl::StrCat("labels[", i, "] = ", labels[i], " is outside [0, ",
                       num_classes, ")"));
    }
    ++counts[labels[i]];
  }
  if (indices.empty()) return 0.0;
  double entropy = 0.0;
  const auto total = static_cast<double>(indices.size());
  for (int64_t count : counts) {
    if (count == 0) continue;
    double q = static_cast<double>(count) / total;
    entropy -= q * std::log(q);
  }
  return entropy;
}

}  // namespace layerfl

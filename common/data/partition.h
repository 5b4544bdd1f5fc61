#ifndef LAYERFL_COMMON_DATA_PARTITION_H_
#define LAYERFL_COMMON_DATA_PARTITION_H_

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace layerfl {

// An assignment of dataset indices to clients. Every function here is a pure
// function of its arguments: the same seed gives the same partition on every
// platform and standard library (see common/data/rng.h).
struct Partition {
  // clients[c] = dataset indices of client c, sorted ascending.
  std::vector<std::vector<int64_t>> clients;
  // domain[c] = domain (or group) id of client c; empty unless made by
  // PartitionFeatureShift or PartitionByGroup.
  std::vector<int> domain;
};

// Shuffles [0, n) and deals it into `num_clients` contiguous chunks whose
// sizes differ by at most one (the first n % num_clients clients get the
// extra index). InvalidArgument when num_clients < 1 or n < num_clients.
absl::StatusOr<Partition> PartitionIid(int64_t n, int num_clients,
                                       uint64_t seed);

// Dirichlet label skew. For each class, proportions p ~ Dir(alpha, ...,
// alpha) over clients are drawn and that class's shuffled indices are cut at
// round(cumsum(p) * class_size). Small alpha -> each client sees few classes;
// large alpha -> close to IID. Every index of `labels` is assigned exactly
// once. A client left with no example afterwards receives one moved from the
// client that currently holds the most (lowest client id on ties; its largest
// index), so every client ends with >= 1 example and the draw never has to be
// repeated. InvalidArgument naming the argument when num_classes < 1,
// num_clients < 1, alpha is not a finite value > 0, labels.size() <
// num_clients, or a label is outside [0, num_classes).
absl::StatusOr<Partition> PartitionDirichlet(const std::vector<int>& labels,
                                             int num_classes, int num_clients,
                                             double alpha, uint64_t seed);

// PartitionIid plus domain[c] = c % num_domains (round-robin), for the
// feature-shift setting where each client sees one image domain.
// InvalidArgument as PartitionIid, or when num_domains < 1.
absl::StatusOr<Partition> PartitionFeatureShift(int64_t n, int num_clients,
                                                int num_domains, uint64_t seed);

// Feature shift by a metadata field (a domain, a language): example i
// belongs to group groups[i] in [0, num_groups). Client c holds examples of
// group c % num_groups only (domain[c] = c % num_groups): for each group in
// order, its indices (ascending) are shuffled by one std::mt19937_64(seed)
// and dealt into contiguous chunks, sizes differing by at most one (the
// first get the extra), to its clients g, g + num_groups, ... in order.
// InvalidArgument when num_groups < 1, num_clients < num_groups (a group
// would have no client), a group id is out of range, or a group has fewer
// examples than clients.
absl::StatusOr<Partition> PartitionByGroup(const std::vector<int>& groups,
                                           int num_groups, int num_clients,
                                           uint64_t seed);

// Splits a shuffle of [0, n) into (held out, rest): the first holds
// round(n * fraction) indices. Both lists sorted ascending, disjoint, together
// [0, n). InvalidArgument when n < 0 or fraction is outside [0, 1).
absl::StatusOr<std::pair<std::vector<int64_t>, std::vector<int64_t>>>
SplitHoldout(int64_t n, double fraction, uint64_t seed);

// Shannon entropy (natural log) of the label distribution of
// labels[indices[...]]; 0 for empty `indices`. At most ln(num_classes).
// InvalidArgument when an index is outside [0, labels.size()) or its label
// outside [0, num_classes).
absl::StatusOr<double> LabelEntropy(const std::vector<int>& labels,
                                    const std::vector<int64_t>& indices,
                                    int num_classes);

}  // namespace layerfl

#endif  // LAYERFL_COMMON_DATA_PARTITION_H_

#ifndef LAYERFL_COMMON_LAYERS_LAYER_GROUPS_H_
#define LAYERFL_COMMON_LAYERS_LAYER_GROUPS_H_

// Layer groups: the unit LayerFL selects, trains, ships and aggregates. A
// model's parameters are partitioned into named groups ordered from input to
// output. Torch-free: shared by the coordinator's selection logic and the
// trainer.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace layerfl {

struct LayerGroup {
  std::string name;
  std::vector<std::string> param_names;  // in the model's parameter order
  int64_t num_params = 0;                // total elements over param_names
  bool frozen = false;                   // never trained
  bool common = false;                   // trained by every client
  // Activations kept for this group's backward pass, in floats per example
  // (an estimate the built-in models give; 0 = unknown). Feeds the "memory"
  // cost unit.
  int64_t activation_floats_per_example = 0;
};

// A group declared by glob patterns over parameter names.
struct GroupPatterns {
  std::string name;
  std::vector<std::string> patterns;
};

// Glob match: '*' matches any run of characters (including '.'), '?' exactly
// one character; everything else literally. The whole name must match.
bool GlobMatch(const std::string& pattern, const std::string& name);

struct NamedShape {
  std::string name;
  int64_t numel = 0;
};

// Assigns every parameter to exactly one group. Errors (InvalidArgument) name
// the parameter: matched by no group, or by two groups (both named); and the
// group: declared twice or matching no parameter. Groups come back in the
// declared order.
absl::StatusOr<std::vector<LayerGroup>> AssignGroups(
    const std::vector<NamedShape>& params,
    const std::vector<GroupPatterns>& declared);

// Marks groups frozen / common by name. An unknown name, or a group listed as
// both, is InvalidArgument naming it and `field` (e.g. "model.frozen").
absl::Status MarkGroups(const std::vector<std::string>& frozen,
                        const std::vector<std::string>& common,
                        std::vector<LayerGroup>& groups);

// Index of the group called `name`, or NotFound naming it.
absl::StatusOr<int> FindGroup(const std::vector<LayerGroup>& groups,
                              const std::string& name);

}  // namespace layerfl

#endif  // LAYERFL_COMMON_LAYERS_LAYER_GROUPS_H_

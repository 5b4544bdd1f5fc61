#include "server/sim/replay.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/util/status_macros.h"
#include "nlohmann/json.hpp"
#include "server/checkpoint/checkpoint_store.h"

namespace layerfl {
namespace {

class ReplaySelector final : public LayerSelector {
 public:
  explicit ReplaySelector(std::map<int64_t, ReplayRound> rounds)
      : rounds_(std::move(rounds)) {}

  bool NeedsScores() const override { return false; }

  absl::StatusOr<SelectionOutcome> Select(
      const std::vector<SelectionCandidate>& candidates,
      int64_t round) override {
    auto it = rounds_.find(round);
    if (it == rounds_.end()) {
      return absl::InternalError(
          absl::StrCat("replay: round ", round, " was not recorded"));
    }
    SelectionOutcome out;
    out.solver_status = "replayed";
    for (const SelectionCandidate& c : candidates) {
      auto layers = it->second.layers.find(c.id);
      if (layers == it->second.layers.end()) {
        return absl::InternalError(absl::StrCat(
            "replay: client '", c.id, "' took no part in round ", round));
      }
      out.layers.push_back(layers->second);
    }
    return out;
  }

  void OnCommitted(const std::vector<SelectionCandidate>&,
                   const SelectionOutcome&) override {}
  std::string SaveState() const override { return ""; }
  absl::Status RestoreState(const std::string&) override {
    return absl::OkStatus();
  }

 private:
  const std::map<int64_t, ReplayRound> rounds_;
};

}  // namespace

absl::StatusOr<std::map<int64_t, ReplayRound>> ReadReplay(
    const std::string& metrics_path) {
  std::ifstream in(metrics_path);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot read ", metrics_path));
  }
  std::map<int64_t, ReplayRound> rounds;
  std::map<int64_t, int> line_of;
  int line_no = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_no;
    if (line.empty()) continue;
    const auto bad = [&](const std::string& why) {
      return absl::InvalidArgumentError(
          absl::StrCat(metrics_path, ":", line_no, ": ", why));
    };
    const nlohmann::json record =
        nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!record.is_object()) return bad("not a JSON object");
    if (!record.contains("round") || !record["round"].is_number_integer() ||
        record["round"].get<int64_t>() < 1) {
      return bad("no round number (an integer >= 1)");
    }
    const int64_t round = record["round"].get<int64_t>();
    if (!record.contains("clients") || !record["clients"].is_array()) {
      return bad(absl::StrCat("round ", round, " lists no clients"));
    }
    ReplayRound r;
    for (const nlohmann::json& c : record["clients"]) {
      if (!c.is_object() || !c.contains("id") || !c["id"].is_string() ||
          !c.contains("layers") || !c["layers"].is_array()) {
        return bad(absl::StrCat("round ", round,
                                ": a client without an id and layers"));
      }
      if (!c.value("contributed", false)) continue;
      const std::string id = c["id"].get<std::string>();
      std::vector<std::string> layers;
      for (const nlohmann::json& l : c["layers"]) {
        if (!l.is_string()) {
          return bad(absl::StrCat("round ", round, ": client '", id,
                                  "' has a layer that is not a name"));
        }
        layers.push_back(l.get<std::string>());
      }
      r.ids.push_back(id);
      r.layers[id] = std::move(layers);
    }
    std::sort(r.ids.begin(), r.ids.end());
    if (record.contains("secure_aggregation")) {
      const nlohmann::json& secure = record["secure_aggregation"];
      if (!secure.is_object() || !secure.contains("roster") ||
          !secure["roster"].is_number_integer() ||
          secure["roster"].get<int64_t>() < 1 ||
          secure["roster"].get<int64_t>() > 255) {
        return bad(absl::StrCat("round ", round,
                                ": secure_aggregation.roster is not a count "
                                "in [1, 255]"));
      }
      r.roster = secure["roster"].get<int>();
    }
    if (r.ids.empty()) {
      return bad(absl::StrCat("round ", round, " added no client's update"));
    }
    auto seen = rounds.find(round);
    if (seen != rounds.end()) {
      // A restarted coordinator may write a committed round's record again.
      if (seen->second.layers != r.layers) {
        return bad(absl::StrCat("round ", round,
                                " was recorded before (line ", line_of[round],
                                ") with other participants"));
      }
      continue;
    }
    line_of[round] = line_no;
    rounds[round] = std::move(r);
  }
  if (rounds.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(metrics_path, ": no committed round"));
  }
  int64_t want = 1;
  for (const auto& [round, r] : rounds) {
    if (round != want) {
      return absl::InvalidArgumentError(absl::StrCat(
          metrics_path, ": round ", want, " is missing (line ",
          line_of[round], " records round ", round, ")"));
    }
    ++want;
  }
  return rounds;
}

absl::Status CompareWithRecordedRun(const ModelWeights& weights,
                                    int64_t round,
                                    const std::string& run_dir) {
  const std::filesystem::path dir =
      std::filesystem::path(run_dir) / "checkpoints";
  if (!std::filesystem::is_directory(dir)) {
    return absl::NotFoundError(
        absl::StrCat("no checkpoints directory in ", run_dir));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<CheckpointStore> store,
                   CheckpointStore::Open(dir.string(), 1 << 20));
  ASSIGN_OR_RETURN(std::optional<Checkpoint> latest, store->LoadLatest());
  if (!latest.has_value()) {
    return absl::NotFoundError(absl::StrCat("no checkpoint in ", dir.string()));
  }
  const auto differ = [&](const std::string& what) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the replay differs from ", run_dir, "'s round ", latest->round, ": ",
        what));
  };
  if (latest->round != round) {
    return differ(absl::StrCat("the replay ended at round ", round));
  }
  const ModelWeights& want = latest->weights;
  if (want.layers.size() != weights.layers.size()) {
    return differ(absl::StrCat(want.layers.size(), " layers against ",
                               weights.layers.size()));
  }
  for (size_t l = 0; l < want.layers.size(); ++l) {
    const LayerWeights& a = weights.layers[l];
    const LayerWeights& b = want.layers[l];
    if (a.group != b.group || a.tensors.size() != b.tensors.size()) {
      return differ(absl::StrCat("layer ", l, " is '", a.group, "' against '",
                                 b.group, "'"));
    }
    for (size_t t = 0; t < a.tensors.size(); ++t) {
      const SharedFloats& x = a.tensors[t].values;
      const SharedFloats& y = b.tensors[t].values;
      if (a.tensors[t].shape != b.tensors[t].shape || x.size() != y.size()) {
        return differ(absl::StrCat("tensor '", b.tensors[t].name,
                                   "' has another shape"));
      }
      for (size_t i = 0; i < x.size(); ++i) {
        if (std::memcmp(&x[i], &y[i], sizeof(float)) != 0) {
          return differ(absl::StrCat("tensor '", b.tensors[t].name,
                                     "' element ", i, ": ", x[i],
                                     " against ", y[i]));
        }
      }
    }
  }
  return absl::OkStatus();
}

std::unique_ptr<LayerSelector> CreateReplaySelector(
    std::map<int64_t, ReplayRound> rounds) {
  return std::make_unique<ReplaySelector>(std::move(rounds));
}

}  // namespace layerfl

#ifndef LAYERFL_TESTS_ROUND_FAKES_H_
#define LAYERFL_TESTS_ROUND_FAKES_H_

// What the round engine tests (synchronous and asynchronous) share: a
// two-layer model, a delta builder, a selector that hands out fixed layers
// and a fixture that builds engines over them.

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/util/clock.h"
#include "server/round/round_engine.h"

namespace layerfl {

// Two layers "a" (2 values) and "b" (1 value).
inline ModelWeights TwoLayers() {
  ModelWeights w;
  w.layers.push_back({"a", 0, {{"a.w", {2}, {1.0f, 2.0f}}}});
  w.layers.push_back({"b", 0, {{"b.w", {1}, {10.0f}}}});
  return w;
}

inline LayerDelta Delta(const std::string& group, std::vector<float> v) {
  return {group,
          {{group + ".w", {static_cast<int64_t>(v.size())}, std::move(v)}}};
}

// Gives every candidate the layers listed for it (default: {"a"}).
class FakeSelector : public LayerSelector {
 public:
  bool NeedsScores() const override { return needs_scores; }
  absl::StatusOr<SelectionOutcome> Select(
      const std::vector<SelectionCandidate>& candidates,
      int64_t round) override {
    SelectionOutcome out;
    seen_rounds.push_back(round);
    seen_candidates.emplace_back();
    for (const SelectionCandidate& c : candidates) {
      seen_candidates.back().push_back(c.id);
    }
    for (const SelectionCandidate& c : candidates) {
      auto it = layers.find(c.id);
      out.layers.push_back(it == layers.end() ? std::vector<std::string>{"a"}
                                              : it->second);
      last_scores[c.id] = c.scores;
    }
    out.solver_status = "fake";
    return out;
  }
  void OnCommitted(const std::vector<SelectionCandidate>&,
                   const SelectionOutcome&) override {
    ++commits;
  }
  std::string SaveState() const override { return std::to_string(commits); }
  absl::Status RestoreState(const std::string& bytes) override {
    commits = bytes.empty() ? 0 : std::stoi(bytes);
    return absl::OkStatus();
  }

  bool needs_scores = false;
  std::map<std::string, std::vector<std::string>> layers;
  std::map<std::string, std::vector<double>> last_scores;
  std::vector<int64_t> seen_rounds;
  std::vector<std::vector<std::string>> seen_candidates;  // ids, per Select
  int commits = 0;
};

// An engine over TwoLayers() with a fake clock and the fake selector.
class EngineTest : public ::testing::Test {
 protected:
  std::unique_ptr<RoundEngine> Make(const RoundEngineOptions& opts,
                                    CheckpointStore* store = nullptr) {
    RoundEngine::Deps deps;
    deps.clock = &clock_;
    deps.selector = &selector_;
    deps.store = store;
    auto engine = RoundEngine::Create(opts, TwoLayers(), deps);
    EXPECT_TRUE(engine.ok()) << engine.status();
    return engine.ok() ? std::move(*engine) : nullptr;
  }
  void JoinAll(RoundEngine& e, std::vector<std::pair<std::string, int64_t>> c) {
    for (auto& [id, n] : c) ASSERT_TRUE(e.Join({id, n, 2.0}).ok());
  }

  FakeClock clock_;
  FakeSelector selector_;
};

}  // namespace layerfl

#endif  // LAYERFL_TESTS_ROUND_FAKES_H_

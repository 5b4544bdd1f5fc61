#ifndef LAYERFL_TESTS_RUN_FIXTURE_H_
#define LAYERFL_TESTS_RUN_FIXTURE_H_

// What the multi-process tests read back from a run directory: the latest
// checkpoint, and metrics.jsonl without what only a transport has (timings,
// bytes on the wire), so that a coordinator's run compares with the
// simulator's line by line.

#include <gtest/gtest.h>

#include <fstream>
#include <regex>
#include <string>
#include <vector>

#include "server/checkpoint/checkpoint_store.h"

namespace layerfl {
namespace fixture {

inline Checkpoint LatestCheckpoint(const std::string& run_dir) {
  auto store = CheckpointStore::Open(run_dir + "/checkpoints", 3);
  EXPECT_TRUE(store.ok()) << store.status();
  if (!store.ok()) return {};
  auto latest = (*store)->LoadLatest();
  EXPECT_TRUE(latest.ok() && latest->has_value()) << run_dir;
  if (!latest.ok() || !latest->has_value()) return {};
  return **latest;
}

inline std::vector<std::string> RunMetrics(const std::string& run_dir) {
  std::vector<std::string> out;
  std::ifstream in(run_dir + "/metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    line = line.substr(0, line.find(",\"timing_ms\""));
    line = std::regex_replace(line, std::regex(",\"bytes_down\":[0-9]+"), "");
    line =
        std::regex_replace(line, std::regex(",\"wire_bytes_up\":[0-9]+"), "");
    out.push_back(line);
  }
  return out;
}

}  // namespace fixture
}  // namespace layerfl

#endif  // LAYERFL_TESTS_RUN_FIXTURE_H_

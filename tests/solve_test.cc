// layerfl-solve: JSON problems solved and written back (hand-checked
// answers, the binary on a file and on stdin) and bad files refused naming
// the field.

#include <cstdio>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/solve/solve_json.h"

namespace layerfl {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Json = nlohmann::json;

// Client 0 scores [3, 1.5, 2], client 1 [1, 1, 1]; F = 1, w = 1, depth parts
// [2, 1, 1]. Client 1 (budget 3) affords only {2}: 1 + 1 + 1. Client 0
// (budget 5) affords {1, 2}: 1 + 2 + (1 + 1) = 5, but not group 0 (depth 4).
Json HandProblem(double lambda) {
  Json p = Json::parse(R"({"scores": [[3, 1.5, 2], [1, 1, 1]],
      "budgets": [5, 3], "cost": {"fixed": 1, "per_layer": [1, 1, 1],
      "depth": [2, 1, 1]}})");
  p["lambda"] = lambda;
  return p;
}

Json Solve(const Json& problem) {
  absl::StatusOr<std::string> out = SolveStrategicJson(problem.dump());
  EXPECT_TRUE(out.ok()) << out.status();
  return out.ok() ? Json::parse(*out) : Json();
}

TEST(SolveJsonTest, HandCheckedAnswers) {
  // lambda = 0: client 0 takes {1, 2} (3.5), client 1 {2} (1).
  Json a = Solve(HandProblem(0));
  EXPECT_EQ(a["selection"], Json::parse("[[1, 2], [2]]"));
  EXPECT_DOUBLE_EQ(a["objective"].get<double>(), 4.5);
  EXPECT_EQ(a["status"], "optimal");
  EXPECT_DOUBLE_EQ(a["gap"].get<double>(), 0);
  EXPECT_EQ(a["cost"], Json::parse("[5, 3]"));
  // lambda = 1: group 1 held by one of two clients costs 1 * 1: 3.5 + 1 - 1
  // = 3.5 still beats both on {2} (3).
  Json b = Solve(HandProblem(1));
  EXPECT_EQ(b["selection"], Json::parse("[[1, 2], [2]]"));
  EXPECT_DOUBLE_EQ(b["objective"].get<double>(), 3.5);
  // lambda = 2: 3.5 + 1 - 2 = 2.5 < 3: both train {2} alone.
  Json c = Solve(HandProblem(2));
  EXPECT_EQ(c["selection"], Json::parse("[[2], [2]]"));
  EXPECT_DOUBLE_EQ(c["objective"].get<double>(), 3);
  EXPECT_DOUBLE_EQ(c["upper_bound"].get<double>(), 3);
}

TEST(SolveJsonTest, CommonFrozenAndPerClientCosts) {
  Json p = HandProblem(0);
  p["common"] = {2};
  p["frozen"] = {1};
  // Client 0 pays 3 for the common group; group 0 adds 1 + depth 3 more.
  p["budgets"] = {7, 3};
  Json a = Solve(p);
  EXPECT_EQ(a["selection"], Json::parse("[[0, 2], [2]]"));
  EXPECT_EQ(a["cost"], Json::parse("[7, 3]"));
  // Per-client costs: client 1 gets a device without the depth penalty.
  p["cost"] = Json::parse(R"([{"fixed": 1, "per_layer": [1, 1, 1],
      "depth": [2, 1, 1]}, {"fixed": 0, "per_layer": [1, 1, 1],
      "depth": [0, 0, 0]}])");
  Json b = Solve(p);
  EXPECT_EQ(b["selection"], Json::parse("[[0, 2], [0, 2]]"));
  EXPECT_EQ(b["cost"], Json::parse("[7, 2]"));
}

TEST(SolveJsonTest, ZeroBudgetSelectsNothing) {
  Json p = HandProblem(0.5);
  p["budgets"] = {0, 0};
  Json a = Solve(p);
  EXPECT_EQ(a["selection"], Json::parse("[[], []]"));
  EXPECT_DOUBLE_EQ(a["objective"].get<double>(), 0);
}

std::string Error(const Json& problem) {
  absl::StatusOr<std::string> out = SolveStrategicJson(problem.dump());
  EXPECT_FALSE(out.ok());
  return std::string(out.status().message());
}

TEST(SolveJsonTest, BadFilesAreRefusedNamingTheField) {
  EXPECT_THAT(
      std::string(SolveStrategicJson("{\"scores\": [").status().message()),
      HasSubstr("input: not JSON"));
  Json p = HandProblem(0);
  p.erase("budgets");
  EXPECT_THAT(Error(p), HasSubstr("budgets: required"));
  p = HandProblem(0);
  p["budgets"] = {5, -1};
  EXPECT_THAT(Error(p),
              HasSubstr("budgets[1]: must be a finite number >= 0, got -1"));
  p = HandProblem(0);
  p["budgets"] = {5};
  EXPECT_THAT(Error(p), HasSubstr("budgets: must be a list of 2 budgets"));
  p = HandProblem(0);
  p["scores"][1] = {1, 1};
  EXPECT_THAT(Error(p), HasSubstr("scores[1]: 2 values for 3 groups"));
  p = HandProblem(0);
  p["scores"][0][2] = "x";
  EXPECT_THAT(
      Error(p),
      HasSubstr("scores[0][2]: must be a finite number >= 0, got \"x\""));
  p = HandProblem(0);
  p["cost"]["depth"] = {1, 1};
  EXPECT_THAT(Error(p), HasSubstr("cost.depth: 2 values for 3 groups"));
  p = HandProblem(0);
  p["cost"].erase("fixed");
  EXPECT_THAT(Error(p), HasSubstr("cost.fixed: required"));
  p = HandProblem(0);
  p["cost"]["speed"] = 2;
  EXPECT_THAT(Error(p), HasSubstr("cost.speed: unknown key"));
  p = HandProblem(0);
  p["lamda"] = 1;
  EXPECT_THAT(Error(p), HasSubstr("lamda: unknown key"));
  p = HandProblem(0);
  p["lambda"] = -1;
  EXPECT_THAT(Error(p),
              HasSubstr("lambda: must be a finite number >= 0, got -1"));
  p = HandProblem(0);
  p["common"] = {3};
  EXPECT_THAT(Error(p),
              HasSubstr("common[0]: must be a group index in [0, 3), got 3"));
  p = HandProblem(0);
  p["common"] = {1};
  p["frozen"] = {1};
  EXPECT_THAT(Error(p), HasSubstr("cannot be both frozen and common"));
  p = HandProblem(0);
  p["common"] = {2};
  p["budgets"] = {5, 2};
  EXPECT_THAT(
      Error(p),
      HasSubstr("budgets[1]: 2 cannot hold the common groups (cost 3)"));
  p = HandProblem(0);
  p["cost"] = Json::array({p["cost"]});
  EXPECT_THAT(Error(p), HasSubstr("cost: as a list must have 2 entries"));
}

std::string Shell(const std::string& command, int* rc) {
  std::string out;
  FILE* f = popen(command.c_str(), "r");
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  *rc = pclose(f);
  return out;
}

TEST(SolveBinaryTest, FileAndStdinRoundTrip) {
  const std::string dir = testing::TempDir();
  const std::string path = dir + "/problem.json";
  std::ofstream(path) << HandProblem(2).dump();
  const std::string bin = std::string(LAYERFL_BIN_DIR) + "/layerfl-solve";
  int rc = 0;
  const Json from_file = Json::parse(Shell(bin + " " + path, &rc));
  EXPECT_EQ(rc, 0);
  EXPECT_EQ(from_file["selection"], Json::parse("[[2], [2]]"));
  const Json from_stdin = Json::parse(Shell(bin + " - < " + path, &rc));
  EXPECT_EQ(rc, 0);
  EXPECT_EQ(from_stdin["selection"], from_file["selection"]);
  EXPECT_EQ(from_stdin["objective"], from_file["objective"]);
  std::ofstream(path) << R"({"scores": [[1]], "budgets": [1], "lambda": 0})";
  const std::string err = Shell(bin + " " + path + " 2>&1", &rc);
  EXPECT_NE(rc, 0);
  EXPECT_THAT(err, HasSubstr("layerfl-solve: cost: required"));
  Shell(bin + " " + dir + "/missing.json 2>&1", &rc);
  EXPECT_NE(rc, 0);
}

}  // namespace
}  // namespace layerfl

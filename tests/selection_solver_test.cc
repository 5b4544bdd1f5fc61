// The strategic solver and its knapsack: exactness against brute force over
// many random instances, the edge behaviour of the objective, bounds and
// limits on large instances.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/selection/knapsack.h"
#include "server/selection/rng.h"
#include "server/selection/strategic_solver.h"

namespace layerfl {
namespace {

using ::testing::HasSubstr;

double Tol(double v) { return 1e-9 * std::max(1.0, std::abs(v)); }

// Exhaustive 0-1 knapsack.
double BruteKnapsack(const std::vector<double>& v,
                     const std::vector<int64_t>& w, int64_t cap) {
  double best = 0;
  const int n = static_cast<int>(v.size());
  for (uint32_t mask = 0; mask < (1u << n); ++mask) {
    int64_t weight = 0;
    double value = 0;
    for (int j = 0; j < n; ++j) {
      if (mask >> j & 1) {
        weight += w[j];
        value += v[j];
      }
    }
    if (weight <= cap) best = std::max(best, value);
  }
  return best;
}

TEST(KnapsackTest, MatchesBruteForce) {
  DeterministicRng rng(11);
  Knapsack knapsack;
  for (int trial = 0; trial < 2000; ++trial) {
    const int n = static_cast<int>(rng.UniformInt(0, 12));
    std::vector<double> v(n);
    std::vector<int64_t> w(n);
    for (int j = 0; j < n; ++j) {
      v[j] = rng.UniformInt(-2, 9) * (trial % 2 ? 1.0 : rng.UniformDouble());
      w[j] = trial % 3 == 0 ? 2 : rng.UniformInt(1, 7);
    }
    const int64_t cap = rng.UniformInt(0, 20);
    const Knapsack::Result r = knapsack.Solve(v, w, cap);
    ASSERT_TRUE(r.proven_optimal);
    ASSERT_NEAR(r.value, BruteKnapsack(v, w, cap), 1e-9) << "trial " << trial;
    int64_t weight = 0;
    for (int j : r.taken) {
      weight += w[j];
      EXPECT_GT(v[j], 0);
    }
    EXPECT_LE(weight, cap);
    EXPECT_TRUE(std::is_sorted(r.taken.begin(), r.taken.end()));
  }
}

// Exact 0-1 knapsack by dynamic programming over the capacity.
double DpKnapsack(const std::vector<double>& v, const std::vector<int64_t>& w,
                  int64_t cap) {
  std::vector<double> best(cap + 1, 0.0);
  for (size_t j = 0; j < v.size(); ++j) {
    if (v[j] <= 0) continue;
    for (int64_t c = cap; c >= w[j]; --c) {
      best[c] = std::max(best[c], best[c - w[j]] + v[j]);
    }
  }
  return best[cap];
}

TEST(KnapsackTest, ManyItemsOfFewSizesMatchDynamicProgramming) {
  // Layer groups of a model share a few sizes; equal-weight dominance keeps
  // these fast and must keep them exact.
  DeterministicRng rng(12);
  Knapsack knapsack;
  // Three sizes go through the per-size enumeration, six through branch and
  // bound with equal-weight dominance.
  const int64_t sizes[] = {1, 4, 8, 3, 5, 11};
  for (int trial = 0; trial < 400; ++trial) {
    const int n = static_cast<int>(rng.UniformInt(20, 48));
    const int num_sizes = trial % 2 ? 3 : 6;
    std::vector<double> v(n);
    std::vector<int64_t> w(n);
    for (int j = 0; j < n; ++j) {
      w[j] = sizes[rng.UniformBelow(num_sizes)];
      v[j] = trial % 4 < 2 ? rng.UniformDouble() * w[j]
                           : static_cast<double>(rng.UniformInt(0, 3));
    }
    const int64_t cap = rng.UniformInt(0, 120);
    const Knapsack::Result r = knapsack.Solve(v, w, cap, 200000);
    ASSERT_TRUE(r.proven_optimal) << "trial " << trial;
    ASSERT_NEAR(r.value, DpKnapsack(v, w, cap), 1e-9) << "trial " << trial;
    EXPECT_EQ(r.upper_bound, r.value);
  }
}

TEST(KnapsackTest, NodeLimitKeepsAFeasibleAnswerAndAValidBound) {
  DeterministicRng rng(13);
  Knapsack knapsack;
  std::vector<double> v(40);
  std::vector<int64_t> w(40);
  for (int j = 0; j < 40; ++j) {
    w[j] = rng.UniformInt(50, 100);
    v[j] = static_cast<double>(w[j]) + rng.UniformDouble();
  }
  const Knapsack::Result r = knapsack.Solve(v, w, 1000, 10);
  EXPECT_FALSE(r.proven_optimal);
  int64_t weight = 0;
  for (int j : r.taken) weight += w[j];
  EXPECT_LE(weight, 1000);
  EXPECT_GE(r.upper_bound, DpKnapsack(v, w, 1000));
}

TEST(KnapsackTest, UniformWeightsTakeHighestScoresLowerIndexOnTies) {
  Knapsack knapsack;
  const Knapsack::Result r =
      knapsack.Solve({3, 5, 5, 0, 1}, {2, 2, 2, 2, 2}, 5);
  EXPECT_THAT(r.taken, ::testing::ElementsAre(1, 2));
  EXPECT_DOUBLE_EQ(r.value, 10);
}

// Random instance families: unit or mixed costs; continuous, tied-integer or
// mostly-zero scores.
StrategicProblem RandomProblem(DeterministicRng& rng, int n, int m, bool unit,
                               int score_kind, double lambda) {
  StrategicProblem p;
  p.num_clients = n;
  p.num_layers = m;
  p.lambda = lambda;
  for (int l = 0; l < m; ++l)
    p.costs.push_back(unit ? 1 : rng.UniformInt(1, 4));
  for (int i = 0; i < n; ++i) {
    p.budgets.push_back(rng.UniformInt(0, unit ? m : 2 * m));
  }
  for (int k = 0; k < n * m; ++k) {
    switch (score_kind) {
      case 0:
        p.scores.push_back(rng.UniformDouble());
        break;
      case 1:
        p.scores.push_back(static_cast<double>(rng.UniformInt(0, 3)));
        break;
      default:
        p.scores.push_back(rng.UniformInt(0, 3) == 0 ? rng.UniformDouble() : 0);
        break;
    }
  }
  return p;
}

bool WithinBudgets(const StrategicProblem& p, const std::vector<uint8_t>& x) {
  for (int i = 0; i < p.num_clients; ++i) {
    int64_t used = 0;
    for (int l = 0; l < p.num_layers; ++l) {
      used += x[i * p.num_layers + l] ? p.costs[l] : 0;
    }
    if (used > p.budgets[i]) return false;
  }
  return true;
}

TEST(StrategicSolverTest, ExactAgainstBruteForceOnRandomInstances) {
  DeterministicRng rng(2024);
  const double lambdas[] = {0.0, 0.01, 0.05, 0.1, 0.3, 1.0, 50.0};
  int instances = 0;
  int64_t total_nodes = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    const int n = static_cast<int>(rng.UniformInt(1, 5));
    const int max_m = n >= 5 ? 3 : n == 4 ? 4 : 5;
    const int m = static_cast<int>(rng.UniformInt(1, max_m));
    const StrategicProblem p =
        RandomProblem(rng, n, m, trial % 2 == 0, trial % 3, lambdas[trial % 7]);
    StrategicSolverOptions options;
    options.time_limit_ms = 10000;
    options.seed = static_cast<uint64_t>(trial);
    // Every other instance without heuristics, so that branch and bound has
    // to find the optimum as well as prove it.
    options.bare_branch_and_bound = trial % 4 >= 2;
    absl::StatusOr<StrategicSolution> got = SolveStrategic(p, options);
    absl::StatusOr<StrategicSolution> want = SolveStrategicBruteForce(p);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_TRUE(want.ok()) << want.status();
    const double opt = want->stats.objective;
    EXPECT_EQ(got->stats.status, SolverStatus::kOptimal) << "trial " << trial;
    EXPECT_NEAR(got->stats.objective, opt, Tol(opt)) << "trial " << trial;
    EXPECT_GE(got->stats.upper_bound, opt - Tol(opt)) << "trial " << trial;
    EXPECT_NEAR(StrategicObjective(p, got->x), got->stats.objective, Tol(opt));
    EXPECT_TRUE(WithinBudgets(p, got->x)) << "trial " << trial;
    total_nodes += got->stats.nodes;
    ++instances;
  }
  EXPECT_EQ(instances, 3000);
  RecordProperty("bnb_nodes", static_cast<int>(total_nodes));
  // The suite must exercise branch and bound, not only the root.
  EXPECT_GT(total_nodes, 0);
}

TEST(StrategicSolverTest,
     BareBranchAndBoundMatchesBruteForceOnLargerInstances) {
  DeterministicRng rng(77);
  int64_t total_nodes = 0;
  for (int trial = 0; trial < 16; ++trial) {
    const StrategicProblem p = RandomProblem(rng, 4, 5, /*unit=*/false,
                                             trial % 2, 0.05 + 0.05 * trial);
    StrategicSolverOptions options;
    options.time_limit_ms = 10000;
    options.bare_branch_and_bound = true;
    absl::StatusOr<StrategicSolution> got = SolveStrategic(p, options);
    absl::StatusOr<StrategicSolution> want = SolveStrategicBruteForce(p);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_TRUE(want.ok()) << want.status();
    EXPECT_EQ(got->stats.status, SolverStatus::kOptimal);
    EXPECT_NEAR(got->stats.objective, want->stats.objective,
                Tol(want->stats.objective))
        << "trial " << trial;
    total_nodes += got->stats.nodes;
  }
  RecordProperty("bnb_nodes", static_cast<int>(total_nodes));
}

TEST(StrategicSolverTest, ExactOnMediumInstancesWithBranching) {
  // Brute force is out of reach here: the proof must close, through branch
  // and bound.
  DeterministicRng rng(7);
  int64_t total_nodes = 0;
  for (int trial = 0; trial < 20; ++trial) {
    const StrategicProblem p = RandomProblem(rng, 10, 8, trial % 2 == 0,
                                             trial % 3, 0.01 + 0.005 * trial);
    StrategicSolverOptions options;
    options.time_limit_ms = 10000;
    absl::StatusOr<StrategicSolution> got = SolveStrategic(p, options);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->stats.status, SolverStatus::kOptimal) << "trial " << trial;
    options.bare_branch_and_bound = true;
    absl::StatusOr<StrategicSolution> bare = SolveStrategic(p, options);
    ASSERT_TRUE(bare.ok()) << bare.status();
    EXPECT_EQ(bare->stats.status, SolverStatus::kOptimal) << "trial " << trial;
    EXPECT_NEAR(bare->stats.objective, got->stats.objective,
                Tol(got->stats.objective));
    total_nodes += bare->stats.nodes;
    EXPECT_TRUE(WithinBudgets(p, got->x));
    EXPECT_GE(got->stats.objective, got->stats.fallback_objective - 1e-9);
    total_nodes += got->stats.nodes;
  }
  EXPECT_GT(total_nodes, 20);
  RecordProperty("bnb_nodes", static_cast<int>(total_nodes));
}

TEST(StrategicSolverTest, LambdaZeroIsPerClientTopByScore) {
  DeterministicRng rng(5);
  for (int trial = 0; trial < 200; ++trial) {
    const int n = static_cast<int>(rng.UniformInt(1, 12));
    const int m = static_cast<int>(rng.UniformInt(1, 10));
    StrategicProblem p = RandomProblem(rng, n, m, /*unit=*/true, 0, 0.0);
    absl::StatusOr<StrategicSolution> got = SolveStrategic(p, {});
    ASSERT_TRUE(got.ok()) << got.status();
    for (int i = 0; i < n; ++i) {
      // Continuous scores are distinct, so the top-B set is unique.
      std::vector<int> order(m);
      for (int l = 0; l < m; ++l) order[l] = l;
      std::sort(order.begin(), order.end(),
                [&](int a, int b) { return p.score(i, a) > p.score(i, b); });
      std::vector<uint8_t> want(m, 0);
      for (int k = 0; k < std::min<int64_t>(p.budgets[i], m); ++k) {
        if (p.score(i, order[k]) > 0) want[order[k]] = 1;
      }
      for (int l = 0; l < m; ++l) {
        EXPECT_EQ(got->x[i * m + l], want[l]) << "trial " << trial;
      }
    }
  }
}

TEST(StrategicSolverTest, HugeLambdaMakesEveryLayerAllOrNone) {
  DeterministicRng rng(9);
  for (int trial = 0; trial < 200; ++trial) {
    const int n = static_cast<int>(rng.UniformInt(2, 10));
    const int m = static_cast<int>(rng.UniformInt(1, 8));
    StrategicProblem p = RandomProblem(rng, n, m, trial % 2 == 0, 0, 1e6);
    for (int i = 0; i < n; ++i) p.budgets[i] = rng.UniformInt(2, 8);
    absl::StatusOr<StrategicSolution> got = SolveStrategic(p, {});
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->stats.status, SolverStatus::kOptimal);
    for (int l = 0; l < m; ++l) {
      int count = 0;
      for (int i = 0; i < n; ++i) count += got->x[i * m + l];
      EXPECT_TRUE(count == 0 || count == n)
          << "trial " << trial << " layer " << l;
    }
    // And the shared set is the best one every budget can hold.
    EXPECT_GE(got->stats.objective, 0);
  }
}

TEST(StrategicSolverTest, ZeroScoreLayerNeverPreferredAtLambdaZero) {
  StrategicProblem p;
  p.num_clients = 3;
  p.num_layers = 3;
  p.costs = {1, 1, 1};
  p.budgets = {1, 2, 3};
  // Layer 1 scores 0 for everyone.
  p.scores = {0.5, 0, 0.1,  //
              0.2, 0, 0.3,  //
              0.4, 0, 0.9};
  absl::StatusOr<StrategicSolution> got = SolveStrategic(p, {});
  ASSERT_TRUE(got.ok());
  EXPECT_THAT(got->x, ::testing::ElementsAre(1, 0, 0,  //
                                             1, 0, 1,  //
                                             1, 0, 1));
}

TEST(StrategicSolverTest, HandComputedTwoClients) {
  // a prefers layer 0 (1.0 vs 0.6), b layer 1 (1.0 vs 0.5), one layer each.
  // Apart: 2.0 - 2 lambda; together on layer 1: 1.6; on layer 0: 1.5.
  StrategicProblem p;
  p.num_clients = 2;
  p.num_layers = 2;
  p.costs = {1, 1};
  p.budgets = {1, 1};
  p.scores = {1.0, 0.6, 0.5, 1.0};
  p.lambda = 0.1;
  absl::StatusOr<StrategicSolution> apart = SolveStrategic(p, {});
  ASSERT_TRUE(apart.ok());
  EXPECT_THAT(apart->x, ::testing::ElementsAre(1, 0, 0, 1));
  EXPECT_NEAR(apart->stats.objective, 1.8, 1e-12);
  p.lambda = 0.3;
  absl::StatusOr<StrategicSolution> together = SolveStrategic(p, {});
  ASSERT_TRUE(together.ok());
  EXPECT_THAT(together->x, ::testing::ElementsAre(0, 1, 0, 1));
  EXPECT_NEAR(together->stats.objective, 1.6, 1e-12);
  EXPECT_NEAR(together->stats.fallback_objective, 2.0 - 0.6, 1e-12);
}

TEST(StrategicSolverTest, DegenerateSizes) {
  StrategicProblem empty;
  absl::StatusOr<StrategicSolution> got = SolveStrategic(empty, {});
  ASSERT_TRUE(got.ok());
  EXPECT_TRUE(got->x.empty());
  EXPECT_EQ(got->stats.status, SolverStatus::kOptimal);

  StrategicProblem no_layers;
  no_layers.num_clients = 3;
  no_layers.budgets = {1, 2, 3};
  got = SolveStrategic(no_layers, {});
  ASSERT_TRUE(got.ok());
  EXPECT_DOUBLE_EQ(got->stats.objective, 0);
}

TEST(StrategicSolverTest, LargeInstanceIsFeasibleWithValidGap) {
  DeterministicRng rng(3);
  const int n = 300, m = 32;
  StrategicProblem p;
  p.num_clients = n;
  p.num_layers = m;
  p.lambda = 0.5 / n;
  p.costs.assign(m, 1);
  for (int i = 0; i < n; ++i) p.budgets.push_back(rng.UniformInt(1, 12));
  for (int i = 0; i < n; ++i) {
    for (int l = 0; l < m; ++l) {
      p.scores.push_back((0.5 + 0.5 * std::sin(0.3 * l)) * rng.UniformDouble());
    }
  }
  StrategicSolverOptions options;
  options.time_limit_ms = 300;
  options.target_gap = 0.01;
  absl::StatusOr<StrategicSolution> got = SolveStrategic(p, options);
  ASSERT_TRUE(got.ok());
  EXPECT_TRUE(WithinBudgets(p, got->x));
  EXPECT_GE(got->stats.upper_bound, got->stats.objective);
  EXPECT_LE(got->stats.gap, 0.01);
  EXPECT_GE(got->stats.objective, got->stats.fallback_objective);
  EXPECT_EQ(got->stats.nodes, 0);  // above max_exact_variables
}

TEST(StrategicSolverTest, TimeLimitStillReturnsFeasibleBoundedAnswer) {
  DeterministicRng rng(4);
  StrategicProblem p = RandomProblem(rng, 400, 40, /*unit=*/false, 0, 0.002);
  StrategicSolverOptions options;
  options.time_limit_ms = 1;
  absl::StatusOr<StrategicSolution> got = SolveStrategic(p, options);
  ASSERT_TRUE(got.ok());
  EXPECT_TRUE(WithinBudgets(p, got->x));
  EXPECT_GE(got->stats.upper_bound, got->stats.objective);
  EXPECT_TRUE(got->stats.time_limit_hit);
}

TEST(StrategicSolverTest, DeterministicForEqualInputs) {
  DeterministicRng rng(8);
  const StrategicProblem p = RandomProblem(rng, 12, 8, false, 1, 0.05);
  StrategicSolverOptions options;
  options.time_limit_ms = 10000;
  absl::StatusOr<StrategicSolution> a = SolveStrategic(p, options);
  absl::StatusOr<StrategicSolution> b = SolveStrategic(p, options);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->x, b->x);
  EXPECT_EQ(a->stats.nodes, b->stats.nodes);
}

TEST(StrategicSolverTest, RejectsInvalidProblems) {
  StrategicProblem p;
  p.num_clients = 1;
  p.num_layers = 2;
  p.costs = {1, 1};
  p.budgets = {1};
  p.scores = {0.5, std::nan("")};
  EXPECT_THAT(SolveStrategic(p, {}).status().message(),
              HasSubstr("client 0 layer 1"));
  p.scores = {0.5, -1};
  EXPECT_FALSE(SolveStrategic(p, {}).ok());
  p.scores = {0.5, 1};
  p.budgets = {-1};
  EXPECT_THAT(SolveStrategic(p, {}).status().message(), HasSubstr("budget"));
  p.budgets = {1};
  p.costs = {0, 1};
  EXPECT_THAT(SolveStrategic(p, {}).status().message(), HasSubstr("cost"));
  p.costs = {1, 1};
  p.lambda = -1;
  EXPECT_THAT(SolveStrategic(p, {}).status().message(), HasSubstr("lambda"));
  p.lambda = 0;
  p.scores = {1};
  EXPECT_FALSE(SolveStrategic(p, {}).ok());
}

TEST(StrategicSolverTest, BruteForceRefusesHugeSearches) {
  DeterministicRng rng(1);
  const StrategicProblem p = RandomProblem(rng, 10, 10, true, 0, 0.1);
  EXPECT_EQ(SolveStrategicBruteForce(p, 1000).status().code(),
            absl::StatusCode::kResourceExhausted);
}

}  // namespace
}  // namespace layerfl

// The depth-aware cost model (cost_model.h), the knapsack under it
// (depth_knapsack.h) and the strategic solver with per-client costs and
// depths: hand-computed costs, and exactness against brute force on random
// instances (non-unit costs, zero budgets, lambda from 0 to large).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/selection/cost_model.h"
#include "server/selection/depth_knapsack.h"
#include "server/selection/rng.h"
#include "server/selection/selection_strategy.h"
#include "server/selection/strategic_solver.h"

namespace layerfl {
namespace {

using ::testing::HasSubstr;

double Tol(double v) { return 1e-9 * std::max(1.0, std::abs(v)); }

CostModel HandModel() {
  CostModel m;
  m.fixed = 10;
  m.per_layer = {1, 2, 3, 4};
  m.depth = {5, 6, 7, 8};
  return m;
}

TEST(CostModelTest, HandComputedCosts) {
  const CostModel m = HandModel();
  ASSERT_TRUE(m.Validate(4, "cost").ok());
  // F + w1 + w3 + (a1 + a2 + a3) = 10 + 2 + 4 + 6 + 7 + 8.
  EXPECT_DOUBLE_EQ(m.Cost({1, 3}), 37);
  EXPECT_DOUBLE_EQ(m.Cost({3, 1}), 37);
  // Only the output group: F + w3 + a3.
  EXPECT_DOUBLE_EQ(m.Cost({3}), 22);
  // The input group pays the whole backward pass: 10 + 1 + 26.
  EXPECT_DOUBLE_EQ(m.Cost({0}), 37);
  // A duplicate counts once: 10 + 3 + 7 + 8.
  EXPECT_DOUBLE_EQ(m.Cost({2, 2}), 28);
  EXPECT_DOUBLE_EQ(m.Cost({}), 0);
  EXPECT_DOUBLE_EQ(m.DepthFrom(2), 15);
  EXPECT_DOUBLE_EQ(m.DepthFrom(4), 0);
  const CostModel additive = AdditiveCostModel({1, 1, 1});
  EXPECT_DOUBLE_EQ(additive.Cost({0, 2}), 2);
}

TEST(CostModelTest, ValidateNamesTheField) {
  CostModel m = HandModel();
  EXPECT_THAT(m.Validate(5, "client 'a'").message(),
              HasSubstr("client 'a'.per_layer: 4 values for 5 layer groups"));
  m.depth[2] = -1;
  EXPECT_THAT(m.Validate(4, "cost").message(),
              HasSubstr("cost.depth[2]: must be finite and >= 0, got -1"));
  m = HandModel();
  m.fixed = std::nan("");
  EXPECT_THAT(m.Validate(4, "cost").message(), HasSubstr("cost.fixed"));
}

// Exhaustive search of the depth knapsack.
double BruteDepthKnapsack(const std::vector<double>& v,
                          const std::vector<int64_t>& w,
                          const std::vector<int64_t>& d, int64_t base,
                          int64_t cap) {
  double best = 0;
  const int n = static_cast<int>(v.size());
  for (uint32_t mask = 0; mask < (1u << n); ++mask) {
    int64_t weight = 0, deepest = base;
    double value = 0;
    for (int j = 0; j < n; ++j) {
      if (mask >> j & 1) {
        weight += w[j];
        deepest = std::max(deepest, d[j]);
        value += v[j];
      }
    }
    if (weight + deepest <= cap) best = std::max(best, value);
  }
  return base > cap ? 0 : best;
}

TEST(DepthKnapsackTest, MatchesBruteForce) {
  DeterministicRng rng(31);
  DepthKnapsack knapsack;
  for (int trial = 0; trial < 3000; ++trial) {
    const int n = static_cast<int>(rng.UniformInt(0, 10));
    std::vector<double> v(n);
    std::vector<int64_t> w(n), d(n);
    // Depths from a suffix sum (input side deepest), as a model gives them,
    // or arbitrary.
    int64_t suffix = 0;
    for (int j = n - 1; j >= 0; --j) {
      v[j] = rng.UniformInt(-2, 9) * (trial % 2 ? 1.0 : rng.UniformDouble());
      w[j] = trial % 3 == 0 ? 2 : rng.UniformInt(1, 7);
      suffix += rng.UniformInt(0, 4);
      d[j] = trial % 5 == 0 ? rng.UniformInt(0, 12) : suffix;
    }
    const int64_t base = trial % 4 == 0 ? rng.UniformInt(0, 10) : 0;
    const int64_t cap = rng.UniformInt(0, 30);
    const Knapsack::Result r = knapsack.Solve(v, w, d, base, cap);
    if (base > cap) {  // what is paid anyway does not fit
      EXPECT_TRUE(r.taken.empty());
      EXPECT_EQ(r.value, 0);
      continue;
    }
    ASSERT_TRUE(r.proven_optimal);
    ASSERT_NEAR(r.value, BruteDepthKnapsack(v, w, d, base, cap), 1e-9)
        << "trial " << trial;
    ASSERT_NEAR(r.upper_bound, r.value, 1e-9);
    int64_t weight = 0, deepest = base;
    double value = 0;
    for (int j : r.taken) {
      weight += w[j];
      deepest = std::max(deepest, d[j]);
      value += v[j];
    }
    if (!r.taken.empty() || base > 0) weight += deepest;
    EXPECT_LE(weight, cap) << "trial " << trial;
    EXPECT_EQ(weight, r.weight) << "trial " << trial;
    EXPECT_NEAR(value, r.value, 1e-9);
    EXPECT_TRUE(std::is_sorted(r.taken.begin(), r.taken.end()));
  }
}

TEST(DepthKnapsackTest, DeepLayerThatDoesNotPayIsLeftOut) {
  // Layer 0 scores most but reaching it costs the whole backward pass.
  DepthKnapsack knapsack;
  const Knapsack::Result r =
      knapsack.Solve({5, 3, 3}, {1, 1, 1}, {10, 2, 1}, 0, 6);
  EXPECT_THAT(r.taken, ::testing::ElementsAre(1, 2));
  EXPECT_DOUBLE_EQ(r.value, 6);
  EXPECT_EQ(r.weight, 4);  // 1 + 1 + depth 2
  const Knapsack::Result all =
      knapsack.Solve({5, 3, 3}, {1, 1, 1}, {10, 2, 1}, 0, 13);
  EXPECT_THAT(all.taken, ::testing::ElementsAre(0, 1, 2));
  EXPECT_EQ(all.weight, 13);
}

// A random depth-aware problem: depths are suffix sums of per-group depth
// parts plus a fixed part (the cost model's shape), optionally per client.
StrategicProblem RandomDepthProblem(DeterministicRng& rng, int n, int m,
                                    bool per_client, double lambda) {
  StrategicProblem p;
  p.num_clients = n;
  p.num_layers = m;
  p.lambda = lambda;
  const int rows = per_client ? n : 1;
  for (int r = 0; r < rows; ++r) {
    std::vector<int64_t> d(m);
    int64_t suffix = rng.UniformInt(0, 3);  // the fixed part
    for (int l = m - 1; l >= 0; --l) {
      suffix += rng.UniformInt(0, 3);
      d[l] = suffix;
    }
    for (int l = 0; l < m; ++l) {
      p.costs.push_back(rng.UniformInt(1, 4));
      p.depths.push_back(d[l]);
    }
  }
  for (int i = 0; i < n; ++i) {
    // Zero budgets included.
    p.budgets.push_back(rng.UniformInt(0, 4) == 0 ? 0
                                                  : rng.UniformInt(0, 4 * m));
  }
  for (int k = 0; k < n * m; ++k) {
    p.scores.push_back(rng.UniformInt(0, 4) == 0 ? 0 : rng.UniformDouble());
  }
  return p;
}

bool WithinBudgets(const StrategicProblem& p, const std::vector<uint8_t>& x) {
  for (int i = 0; i < p.num_clients; ++i) {
    if (p.SelectionCost(i, &x[static_cast<size_t>(i) * p.num_layers]) >
        p.budgets[i]) {
      return false;
    }
  }
  return true;
}

TEST(StrategicDepthTest, SelectionCostIsSumPlusDeepest) {
  StrategicProblem p;
  p.num_clients = 2;
  p.num_layers = 3;
  p.costs = {1, 2, 3, 4, 5, 6};   // per client
  p.depths = {9, 5, 1, 8, 4, 0};  // per client
  const uint8_t x0[] = {0, 1, 1};
  const uint8_t x1[] = {1, 0, 1};
  EXPECT_EQ(p.SelectionCost(0, x0), 2 + 3 + 5);
  EXPECT_EQ(p.SelectionCost(1, x1), 4 + 6 + 8);
  const uint8_t none[] = {0, 0, 0};
  EXPECT_EQ(p.SelectionCost(1, none), 0);
}

TEST(StrategicDepthTest, ExactAgainstBruteForceOnRandomInstances) {
  DeterministicRng rng(4242);
  const double lambdas[] = {0.0, 0.01, 0.05, 0.2, 1.0, 50.0};
  int64_t total_nodes = 0;
  int binding = 0;  // instances where the depth term changed the optimum
  for (int trial = 0; trial < 2000; ++trial) {
    const int n = static_cast<int>(rng.UniformInt(1, 4));
    const int m = static_cast<int>(rng.UniformInt(1, n >= 4 ? 3 : 4));
    const StrategicProblem p =
        RandomDepthProblem(rng, n, m, trial % 2 == 0, lambdas[trial % 6]);
    StrategicSolverOptions options;
    options.time_limit_ms = 10000;
    options.seed = static_cast<uint64_t>(trial);
    options.bare_branch_and_bound = trial % 4 >= 2;
    absl::StatusOr<StrategicSolution> got = SolveStrategic(p, options);
    absl::StatusOr<StrategicSolution> want = SolveStrategicBruteForce(p);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_TRUE(want.ok()) << want.status();
    const double opt = want->stats.objective;
    EXPECT_EQ(got->stats.status, SolverStatus::kOptimal) << "trial " << trial;
    EXPECT_NEAR(got->stats.objective, opt, Tol(opt)) << "trial " << trial;
    EXPECT_GE(got->stats.upper_bound, opt - Tol(opt)) << "trial " << trial;
    EXPECT_TRUE(WithinBudgets(p, got->x)) << "trial " << trial;
    total_nodes += got->stats.nodes;
    StrategicProblem additive = p;
    additive.depths.clear();
    absl::StatusOr<StrategicSolution> no_depth =
        SolveStrategicBruteForce(additive);
    ASSERT_TRUE(no_depth.ok());
    binding += no_depth->stats.objective > opt + Tol(opt);
  }
  EXPECT_GT(total_nodes, 0);
  // The depth term must matter in a good share of the instances, or this
  // test would not test it.
  EXPECT_GT(binding, 500);
}

TEST(StrategicDepthTest, MediumInstancesCloseTheProof) {
  DeterministicRng rng(9);
  for (int trial = 0; trial < 10; ++trial) {
    const StrategicProblem p =
        RandomDepthProblem(rng, 8, 6, trial % 2 == 0, 0.01 + 0.01 * trial);
    StrategicSolverOptions options;
    options.time_limit_ms = 10000;
    absl::StatusOr<StrategicSolution> got = SolveStrategic(p, options);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->stats.status, SolverStatus::kOptimal) << "trial " << trial;
    EXPECT_TRUE(WithinBudgets(p, got->x));
    EXPECT_GE(got->stats.objective, got->stats.fallback_objective - 1e-9);
  }
}

TEST(StrategicDepthTest, LargeInstanceIsFeasibleWithReportedGap) {
  DeterministicRng rng(1000);
  const StrategicProblem p = RandomDepthProblem(rng, 1000, 48, true, 1e-4);
  StrategicSolverOptions options;
  options.time_limit_ms = 2000;
  options.target_gap = 0.01;
  absl::StatusOr<StrategicSolution> got = SolveStrategic(p, options);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(WithinBudgets(p, got->x));
  EXPECT_GE(got->stats.upper_bound, got->stats.objective);
  RecordProperty("gap_ppm", static_cast<int>(got->stats.gap * 1e6));
  RecordProperty("solve_ms", static_cast<int>(got->stats.solve_ms));
  std::printf("1000 x 48 with depth: %.1f ms, gap %.4f%%, status %s\n",
              got->stats.solve_ms, 100 * got->stats.gap,
              SolverStatusName(got->stats.status));
  EXPECT_NEAR(StrategicObjective(p, got->x), got->stats.objective,
              Tol(got->stats.objective));
}

TEST(StrategicDepthTest, RejectsBadDepths) {
  StrategicProblem p;
  p.num_clients = 1;
  p.num_layers = 2;
  p.costs = {1, 1};
  p.budgets = {2};
  p.scores = {1, 1};
  p.depths = {1, 2, 3};
  EXPECT_THAT(p.Validate().message(), HasSubstr("3 depths for 2 layers"));
  p.depths = {1, -1};
  EXPECT_THAT(p.Validate().message(),
              HasSubstr("layer 1 depth must be >= 0, got -1"));
  p.depths = {};
  p.costs = {1, 1, 1};
  EXPECT_THAT(p.Validate().message(), HasSubstr("3 costs for 2 layers"));
}

// embed, block0, block1 and a common head; F = 1, w = 1, a = 1 for all.
SelectionInput DepthInput(double budget) {
  SelectionInput in;
  in.layers = {{"embed", 1, false, false},
               {"block0", 1, false, false},
               {"block1", 1, false, false},
               {"head", 1, false, true}};
  auto model = std::make_shared<CostModel>();
  model->fixed = 1;
  model->per_layer = {1, 1, 1, 1};
  model->depth = {1, 1, 1, 1};
  ClientInput c;
  c.id = "a";
  c.budget = budget;
  c.sq_grad_norm = {4, 1, 2, 1};
  c.cost = model;
  in.clients.push_back(c);
  return in;
}

std::vector<int> Select(const std::string& name, const SelectionInput& in) {
  SelectionOptions options;
  absl::StatusOr<std::unique_ptr<SelectionStrategy>> s =
      CreateSelectionStrategy(name, options);
  EXPECT_TRUE(s.ok()) << s.status();
  absl::StatusOr<SelectionResult> r = (*s)->Select(in);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? r->layers[0] : std::vector<int>{};
}

TEST(DepthStrategyTest, HandComputedOrderStrategies) {
  // Budget 7; the head alone costs F + w + a = 3, leaving 4.
  const SelectionInput in = DepthInput(7);
  // top: block1 (cost 1 + depth 1), block0 (1 + 1 + depth 2 = 4), embed
  // would make 3 + depth 3 = 6 > 4.
  EXPECT_THAT(Select("top", in), ::testing::ElementsAre(1, 2, 3));
  // bottom: embed alone reaches the whole depth (1 + 3 = 4); block0 would
  // make 5.
  EXPECT_THAT(Select("bottom", in), ::testing::ElementsAre(0, 3));
  // head (the linear probe): the common head alone.
  EXPECT_THAT(Select("head", in), ::testing::ElementsAre(3));
  // importance: embed's score 4 beats block0 + block1 (3).
  EXPECT_THAT(Select("importance", in), ::testing::ElementsAre(0, 3));
  // Both cost exactly the budget by the model.
  EXPECT_DOUBLE_EQ(in.clients[0].cost->Cost({1, 2, 3}), 7);
  EXPECT_DOUBLE_EQ(in.clients[0].cost->Cost({0, 3}), 7);
  // One more and embed takes block1 along: 1 + 1 + depth 3 = 5 of room 5
  // (block0 would make 6), the whole model cost F + 3 + 4 = 8.
  EXPECT_THAT(Select("importance", DepthInput(8)),
              ::testing::ElementsAre(0, 2, 3));
  EXPECT_DOUBLE_EQ(in.clients[0].cost->Cost({0, 2, 3}), 8);
  // The head alone needs 3: a budget of 2 is refused, naming the cost.
  SelectionOptions options;
  absl::StatusOr<std::unique_ptr<SelectionStrategy>> top =
      CreateSelectionStrategy("top", options);
  ASSERT_TRUE(top.ok());
  EXPECT_THAT((*top)->Select(DepthInput(2)).status().message(),
              HasSubstr("client 'a': budget 2 cannot hold the common layers "
                        "(head: cost 3)"));
  SelectionInput bad = DepthInput(7);
  auto model = std::make_shared<CostModel>(*bad.clients[0].cost);
  model->depth.pop_back();
  bad.clients[0].cost = model;
  EXPECT_THAT((*top)->Select(bad).status().message(),
              HasSubstr("client 'a': cost.depth: 3 values for 4 layer groups"));
}

// A random run with per-client cost models; `integral` keeps every value an
// integer (one tick = one unit), otherwise they are real numbers.
SelectionInput RandomCostInput(DeterministicRng& rng, int n, int m,
                               bool integral) {
  SelectionInput in;
  const auto draw = [&](int lo, int hi) {
    return integral ? static_cast<double>(rng.UniformInt(lo, hi))
                    : lo + (hi - lo) * rng.UniformDouble();
  };
  for (int l = 0; l < m; ++l) {
    in.layers.push_back({"g" + std::to_string(l), 1, false, false});
  }
  in.layers[0].frozen = rng.UniformInt(0, 2) == 0;
  if (rng.UniformInt(0, 1) == 0) in.layers[m - 1].common = true;
  for (int i = 0; i < n; ++i) {
    auto model = std::make_shared<CostModel>();
    model->fixed = draw(0, 3);
    for (int l = 0; l < m; ++l) {
      model->per_layer.push_back(draw(1, 4));
      model->depth.push_back(draw(0, 3));
    }
    ClientInput c;
    c.id = "c" + std::to_string(i);
    c.cost = model;
    const std::vector<int> common =
        in.layers[m - 1].common ? std::vector<int>{m - 1} : std::vector<int>{};
    c.budget = model->Cost(common) + draw(0, 4 * m);
    for (int l = 0; l < m; ++l) {
      c.sq_grad_norm.push_back(rng.UniformInt(0, 3) == 0 ? 0
                                                         : rng.UniformDouble());
    }
    in.clients.push_back(c);
  }
  return in;
}

// The best strategic objective over every per-client subset within its
// real cost.
double BruteStrategic(const SelectionInput& in, const SelectionOptions& o) {
  const int n = static_cast<int>(in.clients.size());
  const int m = static_cast<int>(in.layers.size());
  std::vector<std::vector<std::vector<int>>> feasible(n);
  for (int i = 0; i < n; ++i) {
    for (uint32_t mask = 0; mask < (1u << m); ++mask) {
      std::vector<int> set;
      bool ok = true;
      for (int l = 0; l < m; ++l) {
        const bool in_set = mask >> l & 1;
        if (in.layers[l].frozen && in_set) ok = false;
        if (in.layers[l].common && !in_set) ok = false;
        if (in_set) set.push_back(l);
      }
      if (ok && in.clients[i].cost->Cost(set) <= in.clients[i].budget) {
        feasible[i].push_back(set);
      }
    }
  }
  double best = -1e300;
  std::vector<size_t> idx(n, 0);
  while (true) {
    std::vector<std::vector<int>> layers(n);
    for (int i = 0; i < n; ++i) layers[i] = feasible[i][idx[i]];
    const double lambda = o.lambda / std::max(1.0, n - 1.0);
    absl::StatusOr<double> v =
        SelectionObjective(in, layers, lambda, o.normalize_scores);
    if (v.ok()) best = std::max(best, *v);
    int i = 0;
    while (i < n && ++idx[i] == feasible[i].size()) idx[i++] = 0;
    if (i == n) break;
  }
  return best;
}

TEST(DepthStrategyTest, StrategicEqualsBruteForceUnderCostModels) {
  DeterministicRng rng(77);
  const double lambdas[] = {0.0, 0.02, 0.2, 5.0};
  for (int trial = 0; trial < 300; ++trial) {
    const SelectionInput in = RandomCostInput(
        rng, static_cast<int>(rng.UniformInt(1, 3)),
        static_cast<int>(rng.UniformInt(2, 4)), /*integral=*/true);
    SelectionOptions o;
    o.lambda = lambdas[trial % 4];
    o.time_limit_ms = 10000;
    absl::StatusOr<std::unique_ptr<SelectionStrategy>> s =
        CreateSelectionStrategy("strategic", o);
    ASSERT_TRUE(s.ok());
    absl::StatusOr<SelectionResult> r = (*s)->Select(in);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->diagnostics.status, SolverStatus::kOptimal);
    const double want = BruteStrategic(in, o);
    EXPECT_NEAR(r->diagnostics.objective, want, Tol(want)) << "trial " << trial;
  }
}

TEST(DepthStrategyTest, EveryStrategyStaysWithinRealCostBudgets) {
  DeterministicRng rng(5);
  int nonempty = 0;
  for (int trial = 0; trial < 200; ++trial) {
    const SelectionInput in =
        RandomCostInput(rng, 6, 6, /*integral=*/trial % 2 == 0);
    SelectionOptions o;
    for (const std::string& name : SelectionStrategyNames()) {
      if (name == "full" || name == "rgn" || name == "snr") continue;
      absl::StatusOr<std::unique_ptr<SelectionStrategy>> s =
          CreateSelectionStrategy(name, o);
      ASSERT_TRUE(s.ok());
      absl::StatusOr<SelectionResult> r = (*s)->Select(in);
      ASSERT_TRUE(r.ok()) << name << ": " << r.status();
      for (size_t i = 0; i < in.clients.size(); ++i) {
        const double cost = in.clients[i].cost->Cost(r->layers[i]);
        EXPECT_LE(cost, in.clients[i].budget)
            << name << " trial " << trial << " client " << i;
        nonempty += r->layers[i].size() > 1;
      }
    }
  }
  EXPECT_GT(nonempty, 1000);
}

TEST(LambdaScaleTest, ALoneLayerCostsLambdaWhateverTheNumberOfClients) {
  // Client 0 holds 15% of its score mass on g0 and 85% on g1; the others
  // cannot train anything (budget 0), so g0 would be client 0's alone: it
  // is worth taking iff 0.15 > lambda, for any N.
  for (int n : {2, 5, 20}) {
    for (double lambda : {0.1, 0.2}) {
      SelectionInput in;
      in.layers = {{"g0", 1, false, false}, {"g1", 1, false, false}};
      for (int i = 0; i < n; ++i) {
        ClientInput c;
        c.id = "c" + std::to_string(i);
        c.budget = i == 0 ? 2 : 0;
        c.sq_grad_norm = i == 0 ? std::vector<double>{0.3, 1.7}
                                : std::vector<double>{1, 1};
        in.clients.push_back(c);
      }
      SelectionOptions o;
      o.lambda = lambda;
      absl::StatusOr<std::unique_ptr<SelectionStrategy>> s =
          CreateSelectionStrategy("strategic", o);
      ASSERT_TRUE(s.ok());
      absl::StatusOr<SelectionResult> r = (*s)->Select(in);
      ASSERT_TRUE(r.ok()) << r.status();
      if (lambda < 0.15) {
        EXPECT_THAT(r->layers[0], ::testing::ElementsAre(0, 1)) << n;
      } else {
        EXPECT_THAT(r->layers[0], ::testing::ElementsAre(1)) << n;
      }
      // Alone on both: 0.15 + 0.85 - 2 lambda, or 0.85 - lambda.
      EXPECT_NEAR(r->diagnostics.objective,
                  lambda < 0.15 ? 1 - 2 * lambda : 0.85 - lambda, 1e-12);
    }
  }
}

}  // namespace
}  // namespace layerfl

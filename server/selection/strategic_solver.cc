#include "server/selection/strategic_solver.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/selection/depth_knapsack.h"
#include "server/selection/rng.h"

namespace layerfl {

const char* SolverStatusName(SolverStatus status) {
  switch (status) {
    case SolverStatus::kOptimal:
      return "optimal";
    case SolverStatus::kFeasibleGap:
      return "feasible_gap";
    case SolverStatus::kHeuristic:
      return "heuristic";
  }
  return "unknown";
}

absl::Status StrategicProblem::Validate() const {
  if (num_clients < 0 || num_layers < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "strategic problem: negative size ", num_clients, " x ", num_layers));
  }
  const size_t pairs = static_cast<size_t>(num_clients) * num_layers;
  if (costs.size() != static_cast<size_t>(num_layers) &&
      costs.size() != pairs) {
    return absl::InvalidArgumentError(absl::StrCat(
        "strategic problem: ", costs.size(), " costs for ", num_layers,
        " layers (one per layer, or one per client and layer)"));
  }
  if (!depths.empty() && depths.size() != static_cast<size_t>(num_layers) &&
      depths.size() != pairs) {
    return absl::InvalidArgumentError(absl::StrCat(
        "strategic problem: ", depths.size(), " depths for ", num_layers,
        " layers (none, one per layer, or one per client and layer)"));
  }
  if (static_cast<int>(budgets.size()) != num_clients) {
    return absl::InvalidArgumentError(
        absl::StrCat("strategic problem: ", budgets.size(), " budgets for ",
                     num_clients, " clients"));
  }
  if (scores.size() != static_cast<size_t>(num_clients) * num_layers) {
    return absl::InvalidArgumentError(
        absl::StrCat("strategic problem: ", scores.size(), " scores for ",
                     num_clients, " x ", num_layers));
  }
  if (!std::isfinite(lambda) || lambda < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "strategic problem: lambda must be finite and >= 0, got ", lambda));
  }
  for (size_t k = 0; k < costs.size(); ++k) {
    if (costs[k] < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("strategic problem: layer ", k % num_layers,
                       " cost must be >= 1, got ", costs[k]));
    }
  }
  for (size_t k = 0; k < depths.size(); ++k) {
    if (depths[k] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("strategic problem: layer ", k % num_layers,
                       " depth must be >= 0, got ", depths[k]));
    }
  }
  for (int i = 0; i < num_clients; ++i) {
    if (budgets[i] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("strategic problem: client ", i,
                       " budget must be >= 0, got ", budgets[i]));
    }
    for (int l = 0; l < num_layers; ++l) {
      const double g = score(i, l);
      if (!std::isfinite(g) || g < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("strategic problem: client ", i, " layer ", l,
                         " score must be finite and >= 0, got ", g));
      }
    }
  }
  return absl::OkStatus();
}

int64_t StrategicProblem::SelectionCost(int i, const uint8_t* x_i) const {
  int64_t sum = 0, deepest = 0;
  for (int l = 0; l < num_layers; ++l) {
    if (x_i[l]) {
      sum += cost(i, l);
      deepest = std::max(deepest, depth(i, l));
    }
  }
  return sum + deepest;
}

double StrategicObjective(const StrategicProblem& p,
                          const std::vector<uint8_t>& x) {
  const int n = p.num_clients, m = p.num_layers;
  double value = 0;
  std::vector<int> count(m, 0);
  for (int i = 0; i < n; ++i) {
    for (int l = 0; l < m; ++l) {
      if (x[i * m + l]) {
        value += p.score(i, l);
        ++count[l];
      }
    }
  }
  for (int l = 0; l < m; ++l) {
    value -= p.lambda * static_cast<double>(count[l]) * (n - count[l]);
  }
  return value;
}

namespace {

using Clock = std::chrono::steady_clock;

// Work per phase. The budget dual has one multiplier per client and converges
// quickly; the split dual has one per client-layer pair and is stronger when
// knapsack rounding matters (non-uniform costs), so it runs second.
constexpr int kBudgetChunk = 25;  // budget-dual steps between heuristics
constexpr int kMaxBudgetChunks = 40;
constexpr int kSplitChunk = 20;  // split-dual steps between heuristics
constexpr int kMaxSplitChunks = 15;
constexpr int kRootNodeIters = 50;  // split-dual steps at the B&B root
constexpr int kNodeIters = 30;      // ... and at every other node
constexpr int kStallLimit = 5;      // non-improving steps before halving
// First step-size factor at branch-and-bound nodes. Nodes start from their
// parent's multipliers; bold first steps (halved on stalls) closed the
// paper-like instances with far fewer nodes than theta = 1.
constexpr double kNodeTheta = 3.0;
constexpr int kMaxLocalSearchPasses = 200;
// A best response is a heuristic step, so its knapsack may stop early.
constexpr int64_t kBestResponseNodeLimit = 100'000;

double Gap(double objective, double bound, double tol) {
  if (bound - objective <= tol) return 0.0;
  return (bound - objective) / std::max(std::abs(objective), 1e-12);
}

class Solver {
 public:
  Solver(const StrategicProblem& p, const StrategicSolverOptions& o);
  StrategicSolution Run();

 private:
  struct State {
    std::vector<uint8_t> x;
    std::vector<int> count;  // n_l
    double obj = 0;
  };
  struct Node {
    std::vector<int8_t> fix;    // [N*M]: -1 free, 0 out, 1 in
    std::vector<int64_t> room;  // budget left after the forced-in pairs
                                // costs
    std::vector<int64_t> base;  // deepest forced-in depth per client
    std::vector<int> in;        // forced-in clients per layer
    std::vector<int> free_in;   // free pairs per layer
    std::vector<double> mu;     // budget multipliers [N]
    std::vector<double> u;      // split multipliers [N*M]
    double constant = 0;        // scores of the forced-in pairs
    int free_vars = 0;
    double parent_bound = std::numeric_limits<double>::infinity();
  };

  size_t At(int i, int l) const { return static_cast<size_t>(i) * m_ + l; }
  double G(int i, int l) const { return p_.scores[At(i, l)]; }
  int64_t C(int i, int l) const { return c_[At(i, l)]; }
  int64_t D(int i, int l) const { return d_[At(i, l)]; }
  absl::Span<const int64_t> Costs(int i) const {
    return absl::MakeConstSpan(&c_[At(i, 0)], m_);
  }
  absl::Span<const int64_t> Depths(int i) const {
    return absl::MakeConstSpan(&d_[At(i, 0)], m_);
  }
  int64_t Singleton(int i, int l) const { return C(i, l) + D(i, l); }
  const double* LayerScores(int l) const {
    return &gt_[static_cast<size_t>(l) * n_];
  }
  double ElapsedMs() const {
    return std::chrono::duration<double, std::milli>(Clock::now() - start_)
        .count();
  }
  bool TimeUp() {
    if (!time_up_ && ElapsedMs() >= o_.time_limit_ms) time_up_ = true;
    return time_up_;
  }
  double CurrentGap() const { return Gap(best_.obj, best_bound_, tol_); }
  // target_gap applies only where branch and bound does not run.
  bool GapReached() const {
    return best_bound_ - best_.obj <= tol_ ||
           (!exact_search_ && o_.target_gap > 0 &&
            CurrentGap() <= o_.target_gap);
  }

  // Heuristic.
  State MakeState(std::vector<uint8_t> x) const;
  double Objective(const std::vector<uint8_t>& x);  // F(x), no allocation
  bool BestResponse(State& s, int i);
  void LocalSearch(State& s, int max_passes = kMaxLocalSearchPasses);
  void Offer(const State& s);
  State IndependentStart();
  State ConsensusStart() const;
  void DropToBudget(std::vector<uint8_t>& x, int i, int keep) const;
  void RepairAndSearch(const std::vector<uint8_t>& relaxed, int max_passes);
  bool Kick(int l, bool to_all);
  void KickRounds();

  // Bounds.
  // What client i's free pairs may cost in the budget relaxation.
  static int64_t BudgetRoom(const Node& node, int i) {
    return node.room[i] - node.base[i];
  }
  Node MakeRoot() const;
  void SortLayer(int l);
  double LayerBest(const Node& node, int l);
  double EvalBudget(const Node& node, const std::vector<double>& mu);
  double BudgetDual(Node& node, int iters, double* theta);
  double EvalSplit(const Node& node, const std::vector<double>& u);
  // theta: the step-size factor, kept across calls; null: a fresh one of
  // kNodeTheta.
  double SplitDual(Node& node, int iters, bool* exact, double* theta = nullptr);
  void RootBounds(Node& root);

  // Branch and bound.
  bool Fix(Node& node, int i, int l, int8_t v) const;
  void PickBranch(const Node& node, int* bi, int* bl) const;
  void BranchAndBound(Node root);

  const StrategicProblem& p_;
  const StrategicSolverOptions& o_;
  const int n_, m_;
  const bool exact_search_;  // branch and bound runs on this instance
  DeterministicRng rng_;
  const Clock::time_point start_;
  bool time_up_ = false;
  std::vector<double> pen_;     // pen_[k] = lambda k (N - k)
  std::vector<int64_t> c_, d_;  // costs and depths, [N*M] client-major
  bool has_depth_ = false;
  std::vector<double> gt_;  // scores, layer-major
  double tol_ = 0;          // absolute objective tolerance

  DepthKnapsack knapsack_;
  std::vector<double> w_;
  std::vector<int> count_;
  State best_;
  double best_bound_ = std::numeric_limits<double>::infinity();
  int64_t nodes_ = 0;
  int64_t evals_ = 0;

  // Scratch of the bound evaluations. perm_[l] orders all clients by key_
  // for layer l; it is kept between calls so re-sorting is nearly linear.
  std::vector<std::vector<int>> perm_;
  std::vector<double> key_;
  std::vector<std::pair<uint32_t, int>> radix_, radix_tmp_;
  std::vector<int> chosen_;     // free clients LayerBest puts in the layer
  std::vector<uint8_t> xsel_;   // budget relaxation's selection
  std::vector<int64_t> usage_;  // ... and each client's cost in it
  std::vector<uint8_t> xk_;     // split: knapsack side (within budgets)
  std::vector<uint8_t> zl_;     // split: layer side
  std::vector<int> items_;
  std::vector<double> item_values_;
  std::vector<int64_t> item_costs_, item_depths_;
};

Solver::Solver(const StrategicProblem& p, const StrategicSolverOptions& o)
    : p_(p),
      o_(o),
      n_(p.num_clients),
      m_(p.num_layers),
      exact_search_(static_cast<int64_t>(p.num_clients) * p.num_layers <=
                    o.max_exact_variables),
      rng_(o.seed),
      start_(Clock::now()) {
  pen_.resize(n_ + 1);
  for (int k = 0; k <= n_; ++k) {
    pen_[k] = p_.lambda * static_cast<double>(k) * (n_ - k);
  }
  double scale = 0;
  for (double g : p_.scores) scale += g;
  scale += p_.lambda * static_cast<double>(n_) * n_ * m_ / 4;
  tol_ = 1e-10 * scale;
  c_.resize(static_cast<size_t>(n_) * m_);
  d_.resize(c_.size());
  for (int i = 0; i < n_; ++i) {
    for (int l = 0; l < m_; ++l) {
      c_[At(i, l)] = p_.cost(i, l);
      d_[At(i, l)] = p_.depth(i, l);
      has_depth_ = has_depth_ || d_[At(i, l)] > 0;
    }
  }
  perm_.assign(m_, std::vector<int>(n_));
  for (auto& perm : perm_) {
    for (int i = 0; i < n_; ++i) perm[i] = i;
  }
  key_.resize(n_);
  gt_.resize(static_cast<size_t>(n_) * m_);
  for (int i = 0; i < n_; ++i) {
    for (int l = 0; l < m_; ++l) gt_[static_cast<size_t>(l) * n_ + i] = G(i, l);
  }
}

double Solver::Objective(const std::vector<uint8_t>& x) {
  count_.assign(m_, 0);
  double value = 0;
  for (int i = 0; i < n_; ++i) {
    const uint8_t* xi = &x[At(i, 0)];
    const double* gi = &p_.scores[At(i, 0)];
    for (int l = 0; l < m_; ++l) {
      if (xi[l]) {
        value += gi[l];
        ++count_[l];
      }
    }
  }
  for (int l = 0; l < m_; ++l) value -= pen_[count_[l]];
  return value;
}

Solver::State Solver::MakeState(std::vector<uint8_t> x) const {
  State s;
  s.x = std::move(x);
  s.count.assign(m_, 0);
  for (int i = 0; i < n_; ++i) {
    for (int l = 0; l < m_; ++l) s.count[l] += s.x[At(i, l)];
  }
  s.obj = StrategicObjective(p_, s.x);
  return s;
}

// Client i's best response: a knapsack on the marginal values of its layers
// given the others' choices. Applied only when it raises F by more than tol_.
bool Solver::BestResponse(State& s, int i) {
  w_.resize(m_);
  double current = 0;
  uint8_t* xi = &s.x[At(i, 0)];
  for (int l = 0; l < m_; ++l) {
    const int others = s.count[l] - xi[l];
    w_[l] = G(i, l) - p_.lambda * (n_ - 1 - 2 * others);
    if (xi[l]) current += w_[l];
  }
  const Knapsack::Result r = knapsack_.Solve(
      w_, Costs(i), Depths(i), 0, p_.budgets[i], kBestResponseNodeLimit);
  if (r.value <= current + tol_) return false;
  size_t same = 0;
  for (int l : r.taken) same += xi[l];
  if (same == r.taken.size() &&
      static_cast<int64_t>(same) ==
          std::count(xi, xi + m_, static_cast<uint8_t>(1))) {
    return false;  // the same set, valued in another order
  }
  for (int l = 0; l < m_; ++l) {
    s.count[l] -= xi[l];
    xi[l] = 0;
  }
  for (int l : r.taken) {
    xi[l] = 1;
    ++s.count[l];
  }
  s.obj += r.value - current;
  return true;
}

void Solver::LocalSearch(State& s, int max_passes) {
  std::vector<int> order(n_);
  for (int i = 0; i < n_; ++i) order[i] = i;
  rng_.Shuffle(order);
  for (int pass = 0; pass < max_passes; ++pass) {
    bool improved = false;
    for (int i : order) {
      improved = BestResponse(s, i) || improved;
      if (TimeUp()) break;
    }
    if (!improved || TimeUp()) break;
  }
  s.obj = StrategicObjective(p_, s.x);  // drop accumulated rounding
}

void Solver::Offer(const State& s) {
  if (best_.x.empty() || s.obj > best_.obj + tol_) best_ = s;
}

Solver::State Solver::IndependentStart() {
  std::vector<uint8_t> x(static_cast<size_t>(n_) * m_, 0);
  for (int i = 0; i < n_; ++i) {
    const Knapsack::Result r =
        knapsack_.Solve(absl::MakeConstSpan(&p_.scores[At(i, 0)], m_), Costs(i),
                        Depths(i), 0, p_.budgets[i]);
    for (int l : r.taken) x[At(i, l)] = 1;
  }
  return MakeState(std::move(x));
}

// Every client walks one shared order (total score per total singleton
// cost) and takes what fits, so the selections are nested: a consensus start.
Solver::State Solver::ConsensusStart() const {
  std::vector<double> total(m_, 0), cost(m_, 0);
  for (int i = 0; i < n_; ++i) {
    for (int l = 0; l < m_; ++l) {
      total[l] += G(i, l);
      cost[l] += static_cast<double>(Singleton(i, l));
    }
  }
  std::vector<int> order(m_);
  for (int l = 0; l < m_; ++l) order[l] = l;
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    return total[a] * cost[b] > total[b] * cost[a];
  });
  std::vector<uint8_t> x(static_cast<size_t>(n_) * m_, 0);
  for (int i = 0; i < n_; ++i) {
    int64_t sum = 0, deepest = 0;
    for (int l : order) {
      const int64_t d = std::max(deepest, D(i, l));
      if (total[l] > 0 && sum + C(i, l) + d <= p_.budgets[i]) {
        x[At(i, l)] = 1;
        sum += C(i, l);
        deepest = d;
      }
    }
  }
  return MakeState(std::move(x));
}

// Drops client i's least dense layers (never `keep`, if it can help it) until
// its selection fits its budget.
// "Least dense" is score per cost saved by the drop (its cost, plus the
// depth it alone reaches below the others).
void Solver::DropToBudget(std::vector<uint8_t>& x, int i, int keep) const {
  uint8_t* xi = &x[At(i, 0)];
  int64_t used = p_.SelectionCost(i, xi);
  while (used > p_.budgets[i]) {
    // The two deepest selected depths: dropping the deepest saves the gap.
    int64_t d1 = 0, d2 = 0;
    int deepest = -1;
    for (int l = 0; l < m_; ++l) {
      if (!xi[l]) continue;
      if (D(i, l) > d1 || deepest < 0) {
        d2 = d1;
        d1 = D(i, l);
        deepest = l;
      } else {
        d2 = std::max(d2, D(i, l));
      }
    }
    const auto saved = [&](int l) {
      return static_cast<double>(C(i, l) + (l == deepest ? d1 - d2 : 0));
    };
    int worst = -1;
    for (int l = 0; l < m_; ++l) {
      if (!xi[l] || l == keep) continue;
      if (worst < 0 || G(i, l) * saved(worst) < G(i, worst) * saved(l)) {
        worst = l;
      }
    }
    if (worst < 0) worst = keep;
    xi[worst] = 0;
    used = p_.SelectionCost(i, xi);
  }
}

void Solver::RepairAndSearch(const std::vector<uint8_t>& relaxed,
                             int max_passes) {
  std::vector<uint8_t> x = relaxed;
  for (int i = 0; i < n_; ++i) DropToBudget(x, i, -1);
  State s = MakeState(std::move(x));
  LocalSearch(s, max_passes);
  Offer(s);
}

// Best-response dynamics move one client at a time, so they cannot move a
// layer between "few clients" and "all clients" when the penalty makes every
// single step a loss. A kick makes that move for layer l (dropping each
// client's least dense layers to make room), then re-runs the dynamics; the
// result is kept when it beats the incumbent.
bool Solver::Kick(int l, bool to_all) {
  std::vector<uint8_t> x = best_.x;
  for (int i = 0; i < n_; ++i) {
    if (!to_all) {
      x[At(i, l)] = 0;
    } else if (Singleton(i, l) <= p_.budgets[i]) {
      x[At(i, l)] = 1;
      DropToBudget(x, i, l);
    }
  }
  State s = MakeState(std::move(x));
  LocalSearch(s);
  const double before = best_.obj;
  Offer(s);
  return best_.obj > before;
}

void Solver::KickRounds() {
  std::vector<int> layers(m_);
  for (int l = 0; l < m_; ++l) layers[l] = l;
  for (int round = 0; round < o_.num_starts; ++round) {
    rng_.Shuffle(layers);
    bool improved = false;
    // Toward the nearer extreme first, then (if nothing helped) the other.
    for (int pass = 0; pass < 2 && !improved; ++pass) {
      for (int l : layers) {
        if (GapReached() || TimeUp()) return;
        const int c = best_.count[l];
        if (c == 0 || c == n_) continue;
        const bool majority = 2 * c >= n_;
        improved = Kick(l, pass == 0 ? majority : !majority) || improved;
      }
    }
    if (!improved) return;
  }
}

Solver::Node Solver::MakeRoot() const {
  Node node;
  node.fix.assign(static_cast<size_t>(n_) * m_, -1);
  node.room = p_.budgets;
  node.base.assign(n_, 0);
  node.in.assign(m_, 0);
  node.free_in.assign(m_, n_);
  node.free_vars = n_ * m_;
  for (int i = 0; i < n_; ++i) {
    for (int l = 0; l < m_; ++l) {
      if (Singleton(i, l) > p_.budgets[i]) {
        node.fix[At(i, l)] = 0;
        --node.free_vars;
        --node.free_in[l];
      }
    }
  }
  // mu_i starts at the break density of client i's lambda = 0 knapsack (its
  // LP dual when the penalty and the depth are ignored).
  node.mu.assign(n_, 0.0);
  std::vector<int> order;
  for (int i = 0; i < n_; ++i) {
    order.clear();
    for (int l = 0; l < m_; ++l) {
      if (G(i, l) > 0) order.push_back(l);
    }
    std::sort(order.begin(), order.end(), [&](int a, int b) {
      return G(i, a) * static_cast<double>(C(i, b)) >
             G(i, b) * static_cast<double>(C(i, a));
    });
    int64_t room = p_.budgets[i];
    for (int l : order) {
      if (C(i, l) > room) {
        node.mu[i] = G(i, l) / static_cast<double>(C(i, l));
        break;
      }
      room -= C(i, l);
    }
  }
  return node;
}

// Sorts perm_[l] by key_ descending. Insertion sort first, since keys move
// little between dual steps; when the order changed a lot, a stable LSD radix
// sort on order-preserving integer images of the keys.
void Solver::SortLayer(int l) {
  std::vector<int>& p = perm_[l];
  int descents = 0;
  for (int a = 1; a < n_; ++a) descents += key_[p[a - 1]] < key_[p[a]];
  if (descents == 0) return;
  int64_t moves_left = descents <= 16 ? 4LL * n_ + 64 : -1;
  for (int a = 1; a < n_ && moves_left >= 0; ++a) {
    const int v = p[a];
    const double kv = key_[v];
    int b = a;
    while (b > 0 && key_[p[b - 1]] < kv && --moves_left >= 0) {
      p[b] = p[b - 1];
      --b;
    }
    p[b] = v;
  }
  if (moves_left >= 0) return;
  // Radix sort on the float image (descending = ascending complement), then
  // an insertion pass on the exact keys to order floats that tie.
  radix_.resize(n_);
  radix_tmp_.resize(n_);
  for (int k = 0; k < n_; ++k) {
    const float f = static_cast<float>(key_[p[k]]);
    uint32_t bits;
    std::memcpy(&bits, &f, sizeof bits);
    bits = (bits >> 31) ? ~bits : bits | (uint32_t{1} << 31);
    radix_[k] = {~bits, p[k]};
  }
  for (int shift = 0; shift < 32; shift += 8) {
    size_t count[257] = {0};
    for (const auto& e : radix_) ++count[((e.first >> shift) & 0xff) + 1];
    if (count[((radix_[0].first >> shift) & 0xff) + 1] ==
        static_cast<size_t>(n_)) {
      continue;  // every key has the same byte here
    }
    for (int b = 0; b < 256; ++b) count[b + 1] += count[b];
    for (const auto& e : radix_) {
      radix_tmp_[count[(e.first >> shift) & 0xff]++] = e;
    }
    radix_.swap(radix_tmp_);
  }
  for (int k = 0; k < n_; ++k) p[k] = radix_[k].second;
  for (int a = 1; a < n_; ++a) {
    const int v = p[a];
    const double kv = key_[v];
    int b = a;
    while (b > 0 && key_[p[b - 1]] < kv) {
      p[b] = p[b - 1];
      --b;
    }
    p[b] = v;
  }
}

// Layer l's part of a relaxation whose per-client values are key_: over k
// from in_l (the forced-in clients) to in_l + free_l, the forced-in clients
// plus the k - in_l free ones with the largest keys, less lambda k (N - k).
// Leaves the chosen free clients in chosen_.
double Solver::LayerBest(const Node& node, int l) {
  SortLayer(l);
  const int a = node.in[l];
  const int free = node.free_in[l];
  double prefix = 0;
  double best = -pen_[a];
  int best_j = 0;
  int j = 0;
  for (int i : perm_[l]) {
    if (j >= free) break;
    if (node.fix[At(i, l)] >= 0) continue;
    prefix += key_[i];
    ++j;
    if (prefix - pen_[a + j] > best) {
      best = prefix - pen_[a + j];
      best_j = j;
    }
  }
  chosen_.clear();
  for (int i : perm_[l]) {
    if (static_cast<int>(chosen_.size()) >= best_j) break;
    if (node.fix[At(i, l)] < 0) chosen_.push_back(i);
  }
  return best;
}

// Budget relaxation: L(mu) = sum_i mu_i room_i + sum_l LayerBest with keys
// g_il - mu_i c_il, where room_i is what the forced-in pairs leave, their
// depth included (the free pairs' depth is dropped: a looser constraint).
// Leaves the relaxed selection in xsel_ and each client's cost in it in
// usage_.
double Solver::EvalBudget(const Node& node, const std::vector<double>& mu) {
  ++evals_;
  double value = node.constant;
  usage_.assign(n_, 0);
  xsel_.resize(static_cast<size_t>(n_) * m_);
  for (size_t k = 0; k < xsel_.size(); ++k) xsel_[k] = node.fix[k] == 1;
  for (int i = 0; i < n_; ++i)
    value += mu[i] * static_cast<double>(BudgetRoom(node, i));
  for (int l = 0; l < m_; ++l) {
    const double* gl = LayerScores(l);
    for (int i = 0; i < n_; ++i) {
      key_[i] = gl[i] - mu[i] * static_cast<double>(C(i, l));
    }
    value += LayerBest(node, l);
    for (int i : chosen_) {
      usage_[i] += C(i, l);
      xsel_[At(i, l)] = 1;
    }
  }
  return value;
}

// Projected subgradient descent on the budget dual from node.mu, with Polyak
// steps toward the incumbent. Returns the lowest bound seen; node.mu holds
// its multipliers and xsel_/usage_ the relaxed selection there.
double Solver::BudgetDual(Node& node, int iters, double* theta_io) {
  std::vector<double> mu = node.mu;
  double best = std::numeric_limits<double>::infinity();
  double& theta = *theta_io;
  int stall = 0;
  for (int it = 0; it < iters && !TimeUp(); ++it) {
    const double value = EvalBudget(node, mu);
    if (value < best - tol_) {
      best = value;
      node.mu = mu;
      stall = 0;
    } else if (++stall >= kStallLimit) {
      theta *= 0.5;
      stall = 0;
    }
    double norm2 = 0;
    for (int i = 0; i < n_; ++i) {
      const double s = static_cast<double>(BudgetRoom(node, i) - usage_[i]);
      if (s < 0 || mu[i] > 0) norm2 += s * s;
    }
    if (norm2 == 0 || best <= best_.obj + tol_) break;
    const double step = theta * (value - best_.obj) / norm2;
    for (int i = 0; i < n_; ++i) {
      const double s = static_cast<double>(BudgetRoom(node, i) - usage_[i]);
      mu[i] = std::max(0.0, mu[i] - step * s);
    }
  }
  if (TimeUp()) return best;  // the caller stops; skip the re-evaluation
  const double value = EvalBudget(node, node.mu);
  return std::min(best, value);
}

// Split (Lagrangian decomposition) relaxation: with copies z = x,
//   LD(u) = sum_i max_{x_i within budget} sum_l (g_il - u_il) x_il
//         + sum_l max_{z_l} [sum_i u_il z_il - lambda n_l (N - n_l)],
// an upper bound for every u that keeps each client's knapsack integral.
// Leaves the knapsack side in xk_ (a feasible selection) and the layer side
// in zl_.
double Solver::EvalSplit(const Node& node, const std::vector<double>& u) {
  ++evals_;
  double value = node.constant;
  xk_.resize(static_cast<size_t>(n_) * m_);
  zl_.resize(xk_.size());
  for (size_t k = 0; k < xk_.size(); ++k) xk_[k] = zl_[k] = node.fix[k] == 1;
  for (int i = 0; i < n_; ++i) {
    items_.clear();
    item_values_.clear();
    item_costs_.clear();
    item_depths_.clear();
    for (int l = 0; l < m_; ++l) {
      if (node.fix[At(i, l)] < 0) {
        items_.push_back(l);
        item_values_.push_back(G(i, l) - u[At(i, l)]);
        item_costs_.push_back(C(i, l));
        item_depths_.push_back(D(i, l));
      }
    }
    const Knapsack::Result r = knapsack_.Solve(
        item_values_, item_costs_, item_depths_, node.base[i], node.room[i]);
    value += r.upper_bound;  // the knapsack optimum, or a bound on it
    for (int k : r.taken) xk_[At(i, items_[k])] = 1;
  }
  for (int l = 0; l < m_; ++l) {
    for (int i = 0; i < n_; ++i) key_[i] = u[At(i, l)];
    value += LayerBest(node, l);
    for (int i : chosen_) zl_[At(i, l)] = 1;
  }
  return value;
}

// Subgradient descent on the split dual from node.u. Every knapsack-side
// selection is feasible and is offered as an incumbent. Returns the lowest
// bound seen; node.u holds its multipliers and xk_/zl_ the two sides there.
// *exact is set when the sides agree: the bound is then attained, so it is
// the node's optimum.
double Solver::SplitDual(Node& node, int iters, bool* exact, double* theta_io) {
  *exact = false;
  std::vector<double> u = node.u;
  double best = std::numeric_limits<double>::infinity();
  double local_theta = kNodeTheta;
  double& theta = theta_io != nullptr ? *theta_io : local_theta;
  int stall = 0;
  for (int it = 0; it < iters && !TimeUp(); ++it) {
    const double value = EvalSplit(node, u);
    if (value < best - tol_) {
      best = value;
      node.u = u;
      stall = 0;
    } else if (++stall >= kStallLimit) {
      theta *= 0.5;
      stall = 0;
    }
    if (Objective(xk_) > best_.obj + tol_) Offer(MakeState(xk_));
    double norm2 = 0;
    for (size_t k = 0; k < xk_.size(); ++k) {
      const double d = static_cast<double>(zl_[k]) - xk_[k];
      norm2 += d * d;
    }
    if (norm2 == 0) {
      *exact = true;
      node.u = u;
      return value;
    }
    if (best <= best_.obj + tol_) break;
    const double step = theta * (value - best_.obj) / norm2;
    for (size_t k = 0; k < xk_.size(); ++k) {
      u[k] -= step * (static_cast<double>(zl_[k]) - xk_[k]);
    }
  }
  if (TimeUp()) return best;
  const double value = EvalSplit(node, node.u);
  return std::min(best, value);
}

// Root bounds with a Lagrangian heuristic (repair the relaxed selection,
// then best-response dynamics) between chunks of dual steps.
void Solver::RootBounds(Node& root) {
  const bool exact_search = exact_search_;
  // A phase stops once two chunks closed less than 5% of the remaining gap.
  const auto stalled = [this](std::vector<double>& history, double bound) {
    history.push_back(bound);
    const size_t k = history.size();
    return k >= 3 && history[k - 3] - bound <= 0.05 * (bound - best_.obj);
  };
  std::vector<double> history;
  double theta = 1.0;
  const int heuristic_passes = exact_search ? kMaxLocalSearchPasses : 5;
  const int budget_chunks = exact_search ? 4 : kMaxBudgetChunks;
  for (int chunk = 0; chunk < budget_chunks; ++chunk) {
    if (GapReached() || TimeUp()) return;
    const double bound = BudgetDual(root, kBudgetChunk, &theta);
    best_bound_ = std::min(best_bound_, bound);
    if (GapReached()) return;
    if (!o_.bare_branch_and_bound) RepairAndSearch(xsel_, heuristic_passes);
    if (stalled(history, bound)) break;
    if (theta < 1e-3) theta = 0.25;  // restart a collapsed step size
  }

  if (TimeUp()) return;
  // u_il = g_il - mu_i c_l makes the split bound at most the budget bound.
  // u = 0 gives the lambda = 0 bound (independent knapsacks), exact when the
  // penalty is inactive; start from the better of the two.
  root.u.resize(static_cast<size_t>(n_) * m_);
  for (int i = 0; i < n_; ++i) {
    for (int l = 0; l < m_; ++l) {
      root.u[At(i, l)] = G(i, l) - root.mu[i] * static_cast<double>(C(i, l));
    }
  }
  const std::vector<double> zero(root.u.size(), 0.0);
  const double at_zero = EvalSplit(root, zero);
  Offer(MakeState(xk_));
  best_bound_ = std::min(best_bound_, at_zero);
  if (at_zero < EvalSplit(root, root.u)) root.u = zero;

  // Uniform costs with budgets that are multiples of them (and no depth)
  // make every knapsack's LP integral; the split bound then equals the budget
  // bound.
  bool integral = !has_depth_;
  for (size_t k = 0; k < c_.size() && integral; ++k) {
    integral = c_[k] == c_[0];
  }
  for (int i = 0; i < n_ && integral && m_ > 0; ++i) {
    integral = p_.budgets[i] % c_[0] == 0;
  }
  if (integral && !exact_search) return;
  history.clear();
  theta = 1.0;
  const int split_chunks = exact_search ? 3 : kMaxSplitChunks;
  for (int chunk = 0; chunk < split_chunks; ++chunk) {
    if (GapReached() || TimeUp()) return;
    bool exact = false;
    const double bound = SplitDual(root, kSplitChunk, &exact, &theta);
    best_bound_ = std::min(best_bound_, bound);
    if (exact) best_bound_ = std::min(best_bound_, best_.obj);
    if (GapReached()) return;
    if (!o_.bare_branch_and_bound) RepairAndSearch(zl_, heuristic_passes);
    if (stalled(history, bound)) break;
    if (theta < 1e-3) theta = 0.25;
  }
}

bool Solver::Fix(Node& node, int i, int l, int8_t v) const {
  node.fix[At(i, l)] = v;
  --node.free_vars;
  --node.free_in[l];
  if (v == 0) return true;
  node.room[i] -= C(i, l);
  node.base[i] = std::max(node.base[i], D(i, l));
  ++node.in[l];
  node.constant += G(i, l);
  if (node.room[i] < node.base[i]) return false;
  for (int k = 0; k < m_; ++k) {
    if (node.fix[At(i, k)] < 0 &&
        C(i, k) + std::max(node.base[i], D(i, k)) > node.room[i]) {
      node.fix[At(i, k)] = 0;
      --node.free_vars;
      --node.free_in[k];
    }
  }
  return true;
}

// A free pair where the split relaxation's two sides disagree: in the layer
// with the most disagreements, the client scoring highest there.
void Solver::PickBranch(const Node& node, int* bi, int* bl) const {
  *bi = *bl = -1;
  int most = 0;
  for (int l = 0; l < m_; ++l) {
    int d = 0;
    for (int i = 0; i < n_; ++i) {
      d += node.fix[At(i, l)] < 0 && xk_[At(i, l)] != zl_[At(i, l)];
    }
    if (d > most) {
      most = d;
      *bl = l;
    }
  }
  double top = -1;
  for (int i = 0; *bl >= 0 && i < n_; ++i) {
    const size_t k = At(i, *bl);
    if (node.fix[k] < 0 && xk_[k] != zl_[k] && G(i, *bl) > top) {
      top = G(i, *bl);
      *bi = i;
    }
  }
  for (int k = 0; *bi < 0 && k < n_ * m_; ++k) {  // defensive: any free pair
    if (node.fix[k] < 0) {
      *bi = k / m_;
      *bl = k % m_;
    }
  }
}

// Depth-first branch and bound on single pairs x_il, each node bounded by the
// split dual warm-started from its parent's multipliers.
void Solver::BranchAndBound(Node root) {
  std::vector<Node> stack;
  root.parent_bound = best_bound_;
  stack.push_back(std::move(root));
  while (!stack.empty()) {
    if (nodes_ >= o_.max_nodes || TimeUp() || GapReached()) break;
    Node node = std::move(stack.back());
    stack.pop_back();
    if (node.parent_bound <= best_.obj + tol_) continue;
    ++nodes_;
    if (node.free_vars == 0) {
      Offer(MakeState(std::vector<uint8_t>(node.fix.begin(), node.fix.end())));
      continue;
    }
    bool exact = false;
    const double bound =
        SplitDual(node, nodes_ == 1 ? kRootNodeIters : kNodeIters, &exact);
    if (exact || bound <= best_.obj + tol_) continue;
    int bi, bl;
    PickBranch(node, &bi, &bl);
    const bool relaxed = zl_[At(bi, bl)];
    node.parent_bound = bound;
    Node other = node;
    // Depth-first: the child agreeing with the layer side is explored first.
    const bool ok_later = Fix(node, bi, bl, relaxed ? 0 : 1);
    const bool ok_first = Fix(other, bi, bl, relaxed ? 1 : 0);
    if (ok_later) stack.push_back(std::move(node));
    if (ok_first) stack.push_back(std::move(other));
  }
  // Every part of the search space not yet fathomed lies under an open node.
  double open = best_.obj;
  for (const Node& node : stack) open = std::max(open, node.parent_bound);
  best_bound_ = std::min(best_bound_, open);
}

StrategicSolution Solver::Run() {
  // Starts. On large instances the dynamics from them are capped: the
  // Lagrangian heuristic below starts closer to the optimum.
  const bool small = exact_search_;
  const int start_passes = small ? kMaxLocalSearchPasses : 10;
  State independent = IndependentStart();
  const double fallback = independent.obj;
  const bool heuristics = !o_.bare_branch_and_bound;
  if (heuristics) LocalSearch(independent, start_passes);
  Offer(independent);
  State consensus = ConsensusStart();
  if (heuristics) {
    LocalSearch(consensus, start_passes);
    Offer(consensus);
  }
  if (small && heuristics) {
    State empty =
        MakeState(std::vector<uint8_t>(static_cast<size_t>(n_) * m_, 0));
    LocalSearch(empty);
    Offer(empty);
  }

  Node root = MakeRoot();
  RootBounds(root);
  if (heuristics && !GapReached() && !TimeUp()) KickRounds();
  if (exact_search_ && !GapReached() && !TimeUp()) {
    BranchAndBound(std::move(root));
  }

  StrategicSolution out;
  out.x = best_.x;
  SolverStats& st = out.stats;
  st.objective = StrategicObjective(p_, out.x);
  st.upper_bound = std::max(best_bound_, st.objective);
  st.gap = Gap(st.objective, st.upper_bound, tol_);
  st.status =
      st.gap <= 1e-9 ? SolverStatus::kOptimal : SolverStatus::kFeasibleGap;
  st.fallback_objective = fallback;
  st.nodes = nodes_;
  st.bound_iterations = evals_;
  st.time_limit_hit = time_up_;
  st.solve_ms = ElapsedMs();
  return out;
}

}  // namespace

absl::StatusOr<StrategicSolution> SolveStrategic(
    const StrategicProblem& problem, const StrategicSolverOptions& options) {
  if (absl::Status s = problem.Validate(); !s.ok()) return s;
  if (!(options.time_limit_ms > 0) || !(options.target_gap >= 0)) {
    return absl::InvalidArgumentError(
        "strategic solver: time_limit_ms must be > 0 and target_gap >= 0");
  }
  Solver solver(problem, options);
  return solver.Run();
}

absl::StatusOr<StrategicSolution> SolveStrategicBruteForce(
    const StrategicProblem& problem, int64_t max_combinations) {
  if (absl::Status s = problem.Validate(); !s.ok()) return s;
  const int n = problem.num_clients, m = problem.num_layers;
  if (m > 20) {
    return absl::ResourceExhaustedError("brute force: more than 20 layers");
  }
  // Every client's feasible subsets as bit masks.
  std::vector<std::vector<uint32_t>> subsets(n);
  double combinations = 1;
  for (int i = 0; i < n; ++i) {
    for (uint32_t mask = 0; mask < (1u << m); ++mask) {
      std::vector<uint8_t> xi(m);
      for (int l = 0; l < m; ++l) xi[l] = mask >> l & 1;
      if (problem.SelectionCost(i, xi.data()) <= problem.budgets[i]) {
        subsets[i].push_back(mask);
      }
    }
    combinations *= static_cast<double>(subsets[i].size());
  }
  if (combinations > static_cast<double>(max_combinations)) {
    return absl::ResourceExhaustedError(
        absl::StrCat("brute force: ", combinations,
                     " joint selections exceed the limit ", max_combinations));
  }
  const auto start = Clock::now();
  std::vector<int> count(m, 0), pick(n, 0), best_pick(n, 0);
  double best = -std::numeric_limits<double>::infinity();
  // Odometer over the clients' subset lists.
  std::vector<size_t> idx(n, 0);
  while (true) {
    double value = 0;
    std::fill(count.begin(), count.end(), 0);
    for (int i = 0; i < n; ++i) {
      const uint32_t mask = subsets[i][idx[i]];
      for (int l = 0; l < m; ++l) {
        if (mask >> l & 1) {
          value += problem.score(i, l);
          ++count[l];
        }
      }
    }
    for (int l = 0; l < m; ++l) {
      value -= problem.lambda * static_cast<double>(count[l]) * (n - count[l]);
    }
    if (value > best) {
      best = value;
      for (int i = 0; i < n; ++i) best_pick[i] = static_cast<int>(idx[i]);
    }
    int i = 0;
    while (i < n && ++idx[i] == subsets[i].size()) idx[i++] = 0;
    if (i == n) break;
  }
  StrategicSolution out;
  out.x.assign(static_cast<size_t>(n) * m, 0);
  for (int i = 0; i < n; ++i) {
    const uint32_t mask = subsets[i][best_pick[i]];
    for (int l = 0; l < m; ++l) out.x[i * m + l] = mask >> l & 1;
  }
  out.stats.status = SolverStatus::kOptimal;
  out.stats.objective = StrategicObjective(problem, out.x);
  out.stats.upper_bound = out.stats.objective;
  out.stats.solve_ms =
      std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  return out;
}

}  // namespace layerfl

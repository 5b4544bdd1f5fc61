#include "server/round/selector.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/util/seed.h"
#include "common/util/status_macros.h"
#include "server/selection/budget.h"
#include "server/selection/regulation_stats.h"
#include "server/selection/selection_strategy.h"

namespace layerfl {
namespace {

absl::StatusOr<std::vector<int64_t>> CostsFor(
    const RunConfig& c, const std::vector<LayerGroup>& groups) {
  ASSIGN_OR_RETURN(CostUnit unit, ParseCostUnit(c.budget.unit));
  std::vector<LayerFootprint> footprints;
  for (const LayerGroup& g : groups)
    footprints.push_back({g.name, g.num_params});
  return LayerCosts(footprints, unit);
}

// Local steps of a client with `num_samples` examples (train.local_epochs
// counts batches of its own data).
int StepsFor(const TrainConfig& t, int64_t num_samples) {
  if (t.local_epochs <= 0) return t.local_steps;
  const int64_t batch =
      std::min<int64_t>(t.batch_size, std::max<int64_t>(num_samples, 1));
  return static_cast<int>(t.local_epochs * ((num_samples + batch - 1) / batch));
}

// The score vector a strategy reads: rgn and snr rank by their own metric;
// importance and strategic by importance.metric (sq_grad_norm by default).
enum class ScoreField { kSqGradNorm, kRgn, kSnr };

class StrategySelector : public LayerSelector {
 public:
  StrategySelector(const RunConfig& config, std::vector<LayerSpec> layers,
                   SelectionOptions options,
                   std::unique_ptr<SelectionStrategy> strategy,
                   RegulationStats stats)
      : seed_(config.seed),
        train_(config.train),
        unit_(*ParseCostUnit(config.budget.unit)),
        options_(std::move(options)),
        strategy_name_(config.selection.strategy),
        affordable_depth_(config.importance.depth == "affordable"),
        layers_(std::move(layers)),
        strategy_(std::move(strategy)),
        stats_(std::move(stats)) {
    needs_scores_ = strategy_name_ == "rgn" || strategy_name_ == "snr" ||
                    strategy_name_ == "importance" ||
                    strategy_name_ == "strategic";
    field_ = strategy_name_ == "rgn"   ? ScoreField::kRgn
             : strategy_name_ == "snr" ? ScoreField::kSnr
                                       : ScoreField::kSqGradNorm;
    for (size_t l = 0; l < layers_.size(); ++l) {
      if (layers_[l].common) common_.push_back(static_cast<int>(l));
    }
  }

  bool NeedsScores() const override { return needs_scores_; }

  // Under a time budget: the lowest trainable group l for which training l
  // and the common groups, after a scoring pass from l, fits the client's
  // budget and its declared time cap; the number of groups when none does
  // (the pass then scores nothing).
  int ScoringDepth(const SelectionCandidate& candidate) const override {
    if (!affordable_depth_ || unit_ != CostUnit::kTime ||
        candidate.profile == nullptr) {
      return 0;
    }
    const int g = static_cast<int>(layers_.size());
    double limit = BudgetInCostUnits(unit_, candidate.budget);
    if (candidate.max_time_s > 0) {
      limit = std::min(limit, candidate.max_time_s);
    }
    for (int l = 0; l < g; ++l) {
      if (layers_[l].frozen) continue;
      SelectionCandidate c = candidate;
      c.scored = true;
      c.score_from = l;
      absl::StatusOr<std::shared_ptr<const CostModel>> model = CostFor(c);
      if (!model.ok()) return 0;  // Select() reports the bad profile
      std::vector<int> set = common_;
      set.push_back(l);
      if ((*model)->Cost(set) <= limit) return l;
    }
    return g;
  }

  absl::StatusOr<SelectionOutcome> Select(
      const std::vector<SelectionCandidate>& candidates,
      int64_t round) override {
    SelectionInput input;
    input.layers = layers_;
    input.stats = &stats_;
    input.seed = MixSeed(seed_ ^ MixSeed(static_cast<uint64_t>(round)));
    // Under a measured unit a slow device may not afford even the common
    // layers this round: it trains nothing (an empty selection) rather than
    // go over its budget, and the others are selected without it.
    std::vector<SelectionCandidate> kept;
    std::vector<int> slot(candidates.size(), -1);
    for (size_t k = 0; k < candidates.size(); ++k) {
      const SelectionCandidate& c = candidates[k];
      ClientInput client;
      client.id = c.id;
      client.budget = IsProfiledUnit(unit_) ? BudgetInCostUnits(unit_, c.budget)
                                            : std::floor(c.budget);
      client.num_samples = c.num_samples;
      if (IsProfiledUnit(unit_)) {
        ASSIGN_OR_RETURN(client.cost, CostFor(c));
        if (client.cost->Cost(common_) > client.budget) continue;
      }
      slot[k] = static_cast<int>(kept.size());
      kept.push_back(c);
      switch (field_) {
        case ScoreField::kSqGradNorm:
          client.sq_grad_norm = c.scores;
          break;
        case ScoreField::kRgn:
          client.rgn = c.scores;
          break;
        case ScoreField::kSnr:
          client.snr = c.scores;
          break;
      }
      input.clients.push_back(std::move(client));
    }
    ASSIGN_OR_RETURN(SelectionResult result, strategy_->Select(input));
    ASSIGN_OR_RETURN(bool capped, ApplyCaps(kept, input, result));
    SelectionOutcome out;
    for (size_t k = 0; k < candidates.size(); ++k) {
      if (slot[k] < 0) {
        out.layers.emplace_back();
        out.costs.push_back(0);
        continue;
      }
      const size_t i = static_cast<size_t>(slot[k]);
      const std::vector<int>& picks = result.layers[i];
      std::vector<std::string> names;
      double cost = 0;
      for (int l : picks) {
        names.push_back(layers_[l].name);
        cost += static_cast<double>(layers_[l].cost);
      }
      const CostModel* model = input.clients[i].cost.get();
      if (model != nullptr) {
        cost = model->Cost(picks) / BudgetInCostUnits(unit_, 1.0);
      }
      out.layers.push_back(std::move(names));
      out.costs.push_back(cost);
    }
    const SelectionDiagnostics& d = result.diagnostics;
    out.objective = d.objective;
    out.upper_bound = d.upper_bound;
    out.gap = d.gap;
    out.solver_status = SolverStatusName(d.status);
    if (capped) out.solver_status += "+capped";
    out.solve_ms = d.solve_ms;
    last_input_ = std::move(input);
    last_result_ = std::move(result);
    return out;
  }

  void OnCommitted(const std::vector<SelectionCandidate>&,
                   const SelectionOutcome&) override {
    // The input and result of the selection the engine just committed.
    absl::Status s = stats_.Update(last_input_, last_result_);
    (void)s;  // Only fails on a mismatch Select() already ruled out.
  }

  std::string SaveState() const override { return stats_.Serialize(); }

  // Holds every candidate to the caps it declared besides its budget
  // (max_time_s, max_memory_mb, by its profile): while a selection is over a
  // cap, its lowest non-common layer (the one that reaches deepest) is
  // dropped. The objective is recomputed when anything changed. Returns
  // whether something did.
  absl::StatusOr<bool> ApplyCaps(const std::vector<SelectionCandidate>& cands,
                                 const SelectionInput& input,
                                 SelectionResult& result) const {
    bool changed = false;
    for (size_t i = 0; i < cands.size(); ++i) {
      const SelectionCandidate& c = cands[i];
      if (c.max_time_s <= 0 && c.max_memory_mb <= 0) continue;
      std::vector<std::pair<std::shared_ptr<const CostModel>, double>> caps;
      for (const auto& [unit, cap] :
           {std::pair<CostUnit, double>{CostUnit::kTime, c.max_time_s},
            {CostUnit::kMemory, c.max_memory_mb}}) {
        if (cap <= 0) continue;
        ASSIGN_OR_RETURN(std::shared_ptr<const CostModel> model,
                         CostFor(c, unit));
        caps.emplace_back(model, BudgetInCostUnits(unit, cap));
      }
      std::vector<int>& picks = result.layers[i];
      const auto over = [&] {
        for (const auto& [model, cap] : caps) {
          if (model->Cost(picks) > cap) return true;
        }
        return false;
      };
      while (over()) {
        auto it = std::find_if(picks.begin(), picks.end(),
                               [&](int l) { return !layers_[l].common; });
        if (it == picks.end()) break;  // the common layers stay
        --result.layer_counts[*it];
        picks.erase(it);
        changed = true;
      }
    }
    if (changed) {
      absl::StatusOr<double> objective = SelectionObjective(
          input, result.layers, EffectiveLambda(options_, input.clients.size()),
          options_.normalize_scores, options_.use_running_importance);
      result.diagnostics.objective =
          objective.ok() ? *objective
                         : std::numeric_limits<double>::quiet_NaN();
    }
    return changed;
  }

  // The candidate's cost model in a profiled unit, from its own profile.
  absl::StatusOr<std::shared_ptr<const CostModel>> CostFor(
      const SelectionCandidate& c) const {
    return CostFor(c, unit_);
  }
  absl::StatusOr<std::shared_ptr<const CostModel>> CostFor(
      const SelectionCandidate& c, CostUnit unit) const {
    if (c.profile == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "client '", c.id, "': budget.unit '", CostUnitName(unit),
          "' needs the client's training profile; it reported none"));
    }
    if (c.profile->groups != stats_.layer_names()) {
      return absl::InvalidArgumentError(
          absl::StrCat("client '", c.id,
                       "': its training profile is for other layer groups (",
                       absl::StrJoin(c.profile->groups, ","), ")"));
    }
    RoundWork work;
    work.steps = StepsFor(train_, c.num_samples);
    work.scores = c.scored;
    work.score_from = c.score_from;
    work.speed = c.speed;
    absl::StatusOr<CostModel> model =
        CostModelFromProfile(*c.profile, unit, work);
    if (!model.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("client '", c.id, "': ", model.status().message()));
    }
    return std::make_shared<const CostModel>(std::move(*model));
  }

  absl::Status RestoreState(const std::string& bytes) override {
    if (bytes.empty()) return absl::OkStatus();
    ASSIGN_OR_RETURN(RegulationStats restored,
                     RegulationStats::Deserialize(bytes));
    if (restored.layer_names() != stats_.layer_names()) {
      return absl::FailedPreconditionError(
          "checkpointed selection statistics are for other layers");
    }
    stats_ = std::move(restored);
    return absl::OkStatus();
  }

 private:
  uint64_t seed_;
  std::vector<int> common_;  // indices of the common layers
  TrainConfig train_;
  CostUnit unit_;
  SelectionOptions options_;  // as the strategy was created with
  std::string strategy_name_;
  bool affordable_depth_ = false;  // importance.depth: affordable
  std::vector<LayerSpec> layers_;
  std::unique_ptr<SelectionStrategy> strategy_;
  RegulationStats stats_;
  bool needs_scores_ = false;
  ScoreField field_ = ScoreField::kSqGradNorm;
  SelectionInput last_input_;
  SelectionResult last_result_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<LayerSelector>> CreateLayerSelector(
    const RunConfig& config, const std::vector<LayerGroup>& groups) {
  ASSIGN_OR_RETURN(std::vector<int64_t> costs, CostsFor(config, groups));
  std::vector<std::string> names, frozen, common;
  for (const LayerGroup& g : groups) {
    names.push_back(g.name);
    if (g.frozen) frozen.push_back(g.name);
    if (g.common) common.push_back(g.name);
  }
  ASSIGN_OR_RETURN(std::vector<LayerSpec> layers,
                   MakeLayerTable(names, costs, frozen, common));
  SelectionOptions options;
  options.strategy = config.selection.strategy;
  options.lambda = config.selection.lambda;
  options.normalize_scores = config.selection.normalize_scores;
  options.time_limit_ms = config.selection.time_limit_ms;
  options.target_gap = config.selection.target_gap;
  options.starts = config.selection.starts;
  ASSIGN_OR_RETURN(std::unique_ptr<SelectionStrategy> strategy,
                   CreateSelectionStrategy(options.strategy, options));
  ASSIGN_OR_RETURN(RegulationStats stats, RegulationStats::Create(names));
  return std::unique_ptr<LayerSelector>(
      new StrategySelector(config, std::move(layers), options,
                           std::move(strategy), std::move(stats)));
}

absl::StatusOr<BudgetDistribution> BudgetDistributionFromConfig(
    const RunConfig& config) {
  BudgetDistribution dist;
  ASSIGN_OR_RETURN(dist.kind,
                   ParseBudgetDistribution(config.budget.distribution));
  ASSIGN_OR_RETURN(CostUnit unit, ParseCostUnit(config.budget.unit));
  dist.continuous = IsProfiledUnit(unit);
  dist.value = config.budget.value;
  dist.min = config.budget.min;
  dist.max = config.budget.max;
  dist.mean = config.budget.mean;
  dist.std = config.budget.std;
  RETURN_IF_ERROR(dist.Validate());
  return dist;
}

absl::StatusOr<std::vector<double>> AssignBudgets(
    const RunConfig& config, const std::vector<std::string>& client_ids) {
  ASSIGN_OR_RETURN(BudgetDistribution dist,
                   BudgetDistributionFromConfig(config));
  if (dist.kind == BudgetDistribution::Kind::kDeclared) {
    return absl::InvalidArgumentError(
        "budget.distribution: 'declared' needs clients that declare a budget; "
        "the simulator's virtual clients do not");
  }
  std::vector<double> out;
  for (const std::string& id : client_ids) {
    ASSIGN_OR_RETURN(double b,
                     ResolveClientBudget(dist, config.seed, id, std::nullopt));
    out.push_back(b);
  }
  return out;
}

double DeviceSpeed(const RunConfig& c, const std::string& client_id) {
  const double lo = c.devices.speed_min, hi = c.devices.speed_max;
  if (!(hi > lo)) return lo;
  const uint64_t bits =
      MixSeed(c.seed ^ MixSeed(StableHash("device-speed:" + client_id)));
  const double u = static_cast<double>(bits >> 11) * 0x1p-53;
  return std::exp(std::log(lo) + u * (std::log(hi) - std::log(lo)));
}

std::string ScoreMetricFor(const RunConfig& c) {
  if (c.selection.strategy == "rgn" || c.selection.strategy == "snr") {
    return c.selection.strategy;
  }
  return c.importance.metric;
}

RoundEngineOptions ToEngineOptions(const RunConfig& c) {
  RoundEngineOptions o;
  o.rounds = c.federated.rounds;
  o.clients_per_round = c.federated.clients_per_round;
  o.min_clients = c.federated.min_clients;
  o.selection_period = c.federated.selection_period;
  o.eval_every = c.federated.eval_every;
  o.round_deadline = absl::Seconds(c.federated.round_deadline_s);
  o.max_round_retries = c.federated.max_round_retries;
  o.aggregation.weight_by_samples = c.federated.aggregation == "weighted";
  o.aggregation.server_lr = c.federated.server_lr;
  o.seed = c.seed;
  o.budget_unit = c.budget.unit;
  const DpConfig& dp = c.privacy.dp;
  o.privacy.enabled = dp.enabled;
  o.privacy.central = dp.mode == "central";
  o.privacy.adaptive = dp.clipping == "adaptive";
  o.privacy.clip_norm = dp.clip_norm;
  o.privacy.noise_multiplier = dp.noise_multiplier;
  o.privacy.count_noise_std = ClipCountNoiseStd(c);
  o.privacy.target_quantile = dp.target_quantile;
  o.privacy.clip_lr = dp.clip_lr;
  o.privacy.score_noise_multiplier = dp.score_noise_multiplier;
  o.privacy.delta = dp.delta;
  o.privacy.target_epsilon = dp.target_epsilon;
  o.privacy.noise_seed = dp.noise_seed;
  o.privacy.insecure_sampling_seed = dp.insecure_sampling_seed;
  const SecureAggregationConfig& sa = c.privacy.secure_aggregation;
  o.secagg.enabled = sa.enabled;
  o.secagg.threshold = sa.threshold;
  o.secagg.value_range = sa.value_range;
  const FederatedConfig& f = c.federated;
  o.async.enabled = f.mode == "async";
  o.async.buffer_size = f.buffer_size;
  o.async.max_staleness = f.max_staleness;
  o.async.staleness = f.staleness;
  o.async.exponent = f.staleness_exponent;
  o.async.hinge_a = f.staleness_hinge_a;
  o.async.hinge_b = f.staleness_hinge_b;
  o.async.cohort = f.async_cohort;
  o.scores_from_training = c.importance.source == "train";
  o.score_refresh_period = c.importance.refresh_period;
  o.score_decay = c.importance.decay;
  return o;
}

}  // namespace layerfl

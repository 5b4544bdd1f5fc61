#include "common/trainer/trainer.h"

#include <malloc.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <random>
#include <unordered_map>
#include <unordered_set>

#include "absl/strings/str_cat.h"
#include "common/trainer/memory_meter.h"

namespace layerfl {
namespace {

// Dropout masks come from the task's seed (not its batch order's stream).
constexpr uint64_t kForwardSeedSalt = 0x64726f706f7574ULL;

// A seeded permutation that does not depend on LibTorch's generators, so runs
// replay identically across LibTorch versions.
std::vector<int64_t> Permutation(int64_t n, std::mt19937_64& rng) {
  std::vector<int64_t> idx(n);
  for (int64_t i = 0; i < n; ++i) idx[i] = i;
  for (int64_t i = n - 1; i > 0; --i) {
    const int64_t j =
        static_cast<int64_t>(rng() % static_cast<uint64_t>(i + 1));
    std::swap(idx[i], idx[j]);
  }
  return idx;
}

// Yields batches of indices, reshuffling at each epoch boundary.
class BatchSampler {
 public:
  BatchSampler(int64_t n, int batch_size, uint64_t seed)
      : n_(n), batch_(std::min<int64_t>(batch_size, n)), rng_(seed) {}

  torch::Tensor Next() {
    if (pos_ + batch_ > static_cast<int64_t>(order_.size())) {
      order_ = Permutation(n_, rng_);
      pos_ = 0;
    }
    torch::Tensor idx =
        torch::from_blob(order_.data() + pos_, {batch_}, torch::kLong).clone();
    pos_ += batch_;
    return idx;
  }
  int64_t batches_per_epoch() const { return (n_ + batch_ - 1) / batch_; }

 private:
  int64_t n_;
  int64_t batch_;
  std::mt19937_64 rng_;
  std::vector<int64_t> order_;
  int64_t pos_ = 0;
};

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
      .count();
}

absl::Status TorchError(const char* what, const c10::Error& e) {
  return absl::InternalError(
      absl::StrCat(what, ": LibTorch error: ", e.what_without_backtrace()));
}

// Parameter tensors of each group, in model order.
std::vector<std::vector<std::pair<std::string, torch::Tensor>>> GroupParams(
    Model& model) {
  std::unordered_map<std::string, torch::Tensor> by_name;
  for (auto& [name, t] : model.Parameters()) by_name[name] = t;
  std::vector<std::vector<std::pair<std::string, torch::Tensor>>> out;
  for (const LayerGroup& g : model.groups()) {
    out.emplace_back();
    for (const std::string& p : g.param_names)
      out.back().emplace_back(p, by_name[p]);
  }
  return out;
}

void SetAllRequiresGrad(Model& model, bool value) {
  for (auto& [name, t] : model.Parameters()) t.requires_grad_(value);
}

// Restores requires_grad on every parameter when a call ends, however it ends.
class RequiresGradRestorer {
 public:
  explicit RequiresGradRestorer(Model& model) : model_(model) {}
  ~RequiresGradRestorer() {
    for (auto& [name, t] : model_.Parameters()) {
      t.mutable_grad() = torch::Tensor();
      t.requires_grad_(true);
    }
  }

 private:
  Model& model_;
};

std::unique_ptr<torch::optim::Optimizer> MakeOptimizer(
    const TrainConfig& c, std::vector<torch::Tensor> params) {
  if (c.optimizer == "adam") {
    return std::make_unique<torch::optim::Adam>(
        params, torch::optim::AdamOptions(c.lr).weight_decay(c.weight_decay));
  }
  if (c.optimizer == "adamw") {
    return std::make_unique<torch::optim::AdamW>(
        params, torch::optim::AdamWOptions(c.lr).weight_decay(c.weight_decay));
  }
  return std::make_unique<torch::optim::SGD>(params,
                                             torch::optim::SGDOptions(c.lr)
                                                 .momentum(c.momentum)
                                                 .weight_decay(c.weight_decay));
}

// One group's sq_grad_norm and rgn from the gradients summed in its
// parameters' .grad over `batches` batches: what both the scoring pass and
// the first training step report, computed the same way so they agree bit
// for bit.
LayerScores GradScores(
    const std::string& group,
    const std::vector<std::pair<std::string, torch::Tensor>>& params,
    int batches) {
  torch::NoGradGuard no_grad;
  double sq = 0, wsq = 0;
  for (const auto& [name, w] : params) {
    if (w.grad().defined()) {
      torch::Tensor m = w.grad().to(torch::kDouble) / batches;
      sq += (m * m).sum().item<double>();
    }
    wsq += w.detach().to(torch::kDouble).pow(2).sum().item<double>();
  }
  LayerScores s;
  s.group = group;
  s.sq_grad_norm = sq;
  s.rgn = wsq > 0 ? std::sqrt(sq) / std::sqrt(wsq) : 0.0;
  return s;
}

}  // namespace

void SetTorchThreads(int threads) { torch::set_num_threads(threads); }

void TuneMallocForTraining() {
  // Keep freed activation buffers in the heap instead of returning them to the
  // kernel after every step: without this a training step takes ~4000 page
  // faults and 10-14% longer (bench/results/trainer_malloc.txt).
  mallopt(M_MMAP_THRESHOLD, 64 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
}

SelectiveTrainer::SelectiveTrainer(const TrainConfig& train,
                                   const ImportanceConfig& importance)
    : train_(train), importance_(importance) {}

absl::StatusOr<TrainResult> SelectiveTrainer::Train(
    Model& model, const Examples& data, const std::vector<std::string>& groups,
    uint64_t seed) const {
  if (data.size() == 0) {
    return absl::InvalidArgumentError("train: no local examples");
  }
  SeedForwardRandomness(seed ^ kForwardSeedSalt);
  const std::vector<LayerGroup>& all = model.groups();
  std::unordered_set<std::string> chosen;
  for (const std::string& name : groups) {
    absl::StatusOr<int> idx = FindGroup(all, name);
    if (!idx.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("train: unknown layer group '", name, "'"));
    }
    if (all[*idx].frozen) {
      return absl::InvalidArgumentError(
          absl::StrCat("train: layer group '", name, "' is frozen"));
    }
    if (!chosen.insert(name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("train: layer group '", name, "' listed twice"));
    }
  }

  const auto start = std::chrono::steady_clock::now();
  TensorMemoryMeter meter;
  RequiresGradRestorer restore(model);
  try {
    auto group_params = GroupParams(model);
    SetAllRequiresGrad(model, false);
    std::vector<torch::Tensor> trainable;
    std::vector<int> trained_groups;
    NamedTensors global;  // the trained parameters' starting values
    TrainResult result;
    for (size_t gi = 0; gi < all.size(); ++gi) {
      if (!chosen.count(all[gi].name)) continue;
      trained_groups.push_back(static_cast<int>(gi));
      for (auto& [name, t] : group_params[gi]) {
        torch::Tensor start;
        if (t.storage().resizable()) {
          // The model's own values: trained in place from a copy.
          start = t.detach().clone();
        } else {
          // Values the model reads in place (BindWeights: not LibTorch's
          // storage) are never written: the parameter trains on a copy.
          start = t.detach();
          t.set_data(start.clone());
        }
        t.requires_grad_(true);
        trainable.push_back(t);
        global.emplace_back(name, std::move(start));
        result.trained_params += t.numel();
      }
    }

    BatchSampler sampler(data.size(), train_.batch_size, seed);
    const int steps = train_.local_epochs > 0
                          ? train_.local_epochs * sampler.batches_per_epoch()
                          : train_.local_steps;
    model.SetTraining(true);
    std::unique_ptr<torch::optim::Optimizer> opt;
    if (!trainable.empty()) opt = MakeOptimizer(train_, trainable);
    for (int step = 0; step < steps; ++step) {
      torch::Tensor idx = sampler.Next();
      torch::Tensor logits = model.Forward(data.Inputs(idx));
      torch::Tensor loss =
          torch::cross_entropy_loss(logits, data.labels.index_select(0, idx));
      const double value = loss.item<double>();
      if (!std::isfinite(value)) {
        return absl::InternalError(
            absl::StrCat("train: loss became ", value, " at step ", step));
      }
      if (step == 0) result.first_loss = value;
      result.last_loss = value;
      if (opt == nullptr) continue;
      opt->zero_grad();
      loss.backward();
      if (step == 0) {
        // At the starting weights, before clipping: free importance scores.
        for (int gi : trained_groups) {
          result.first_step_scores.push_back(
              GradScores(all[gi].name, group_params[gi], 1));
        }
      }
      if (train_.grad_clip > 0) {
        torch::nn::utils::clip_grad_norm_(trainable, train_.grad_clip);
      }
      opt->step();
    }
    result.steps = steps;

    // The optimizer's state and the gradients are freed before the deltas
    // are allocated, so that they never coexist.
    opt.reset();
    for (torch::Tensor& t : trainable) t.mutable_grad() = torch::Tensor();
    torch::NoGradGuard no_grad;
    size_t k = 0;
    for (int gi : trained_groups) {
      GroupDelta delta;
      delta.group = all[gi].name;
      for (auto& [name, t] : group_params[gi]) {
        delta.tensors.emplace_back(name, t.detach() - global[k].second);
        global[k++].second = torch::Tensor();  // freed as soon as used
      }
      result.deltas.push_back(std::move(delta));
    }
    result.usage.seconds = SecondsSince(start);
    result.usage.peak_bytes = ParameterBytes(model) + meter.peak_bytes();
    return result;
  } catch (const c10::Error& e) {
    return TorchError("train", e);
  }
}

absl::StatusOr<std::vector<LayerScores>> SelectiveTrainer::Importance(
    Model& model, const Examples& data, uint64_t seed, ResourceUsage* usage,
    int lowest_group, const std::string& metric_or_default) const {
  const std::string& metric = metric_or_default.empty()
                                  ? importance_.metric
                                  : metric_or_default;
  if (metric != "sq_grad_norm" && metric != "rgn" && metric != "snr") {
    return absl::InvalidArgumentError(
        absl::StrCat("importance: unknown metric '", metric, "'"));
  }
  if (data.size() == 0) {
    return absl::InvalidArgumentError("importance: no local examples");
  }
  SeedForwardRandomness(seed ^ kForwardSeedSalt);
  const std::vector<LayerGroup>& all = model.groups();
  if (lowest_group < 0 || lowest_group > static_cast<int>(all.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("importance: lowest group ", lowest_group,
                     " is outside [0, ", all.size(), "]"));
  }
  const auto scored = [&](size_t gi) {
    return !all[gi].frozen && static_cast<int>(gi) >= lowest_group;
  };
  bool any = false;
  for (size_t gi = 0; gi < all.size(); ++gi) any = any || scored(gi);
  const auto start = std::chrono::steady_clock::now();
  TensorMemoryMeter meter;
  RequiresGradRestorer restore(model);
  try {
    auto group_params = GroupParams(model);
    SetAllRequiresGrad(model, false);
    // sq_grad_norm and rgn need only the mean gradient: the batches' losses
    // are backpropagated one after another into .grad, which sums them
    // (float32, as PyTorch accumulates). snr also needs each element's
    // variance across batches: running sums of the gradients and of their
    // squares, per parameter, in double.
    const bool variance = metric == "snr";
    std::vector<std::vector<torch::Tensor>> s1(all.size()), s2(all.size());
    for (size_t gi = 0; gi < all.size(); ++gi) {
      if (!scored(gi)) continue;
      for (auto& [name, t] : group_params[gi]) {
        t.requires_grad_(true);
        t.mutable_grad() = torch::Tensor();
        if (!variance) continue;
        s1[gi].push_back(torch::zeros_like(t, torch::kDouble));
        s2[gi].push_back(torch::zeros_like(t, torch::kDouble));
      }
    }
    model.SetTraining(true);
    BatchSampler sampler(data.size(),
                         importance_.batch_size > 0 ? importance_.batch_size
                                                    : train_.batch_size,
                         seed);
    const int batches = importance_.batches;
    for (int b = 0; any && b < batches; ++b) {
      if (variance) {
        for (size_t gi = 0; gi < all.size(); ++gi) {
          if (!scored(gi)) continue;
          for (auto& [name, t] : group_params[gi]) {
            t.mutable_grad() = torch::Tensor();
          }
        }
      }
      torch::Tensor idx = sampler.Next();
      torch::Tensor loss = torch::cross_entropy_loss(
          model.Forward(data.Inputs(idx)),
          data.labels.index_select(0, idx));
      loss.backward();
      if (!variance) continue;
      torch::NoGradGuard no_grad;
      for (size_t gi = 0; gi < all.size(); ++gi) {
        if (!scored(gi)) continue;
        for (size_t pi = 0; pi < group_params[gi].size(); ++pi) {
          const torch::Tensor& grad = group_params[gi][pi].second.grad();
          if (!grad.defined()) continue;  // parameter unused by the forward
          torch::Tensor g = grad.to(torch::kDouble);
          s1[gi][pi].add_(g);
          s2[gi][pi].add_(g * g);
        }
      }
    }

    torch::NoGradGuard no_grad;
    std::vector<LayerScores> out;
    for (size_t gi = 0; gi < all.size(); ++gi) {
      LayerScores s;
      s.group = all[gi].name;
      if (scored(gi) && !variance) {
        s = GradScores(all[gi].name, group_params[gi], batches);
      } else if (scored(gi)) {
        double sq = 0, var = 0, wsq = 0;
        for (size_t pi = 0; pi < group_params[gi].size(); ++pi) {
          const torch::Tensor& w = group_params[gi][pi].second;
          torch::Tensor m = s1[gi][pi] / batches;
          torch::Tensor v = (s2[gi][pi] / batches - m * m).clamp_min(0.0);
          sq += (m * m).sum().item<double>();
          var += v.sum().item<double>();
          s1[gi][pi] = torch::Tensor();
          s2[gi][pi] = torch::Tensor();
          wsq += w.detach().to(torch::kDouble).pow(2).sum().item<double>();
        }
        s.sq_grad_norm = sq;
        s.rgn = wsq > 0 ? std::sqrt(sq) / std::sqrt(wsq) : 0.0;
        s.snr = sq / std::max(var, 1e-30);
      }
      out.push_back(std::move(s));
    }
    if (usage != nullptr) {
      usage->seconds = SecondsSince(start);
      usage->peak_bytes = ParameterBytes(model) + meter.peak_bytes();
    }
    return out;
  } catch (const c10::Error& e) {
    return TorchError("importance", e);
  }
}

absl::StatusOr<EvalResult> SelectiveTrainer::Evaluate(Model& model,
                                                      const Examples& data,
                                                      int batch_size) const {
  EvalResult r;
  if (data.size() == 0) return r;
  try {
    torch::NoGradGuard no_grad;
    model.SetTraining(false);
    int64_t correct = 0;
    double loss_sum = 0;
    for (int64_t start = 0; start < data.size(); start += batch_size) {
      const int64_t len = std::min<int64_t>(batch_size, data.size() - start);
      torch::Tensor logits = model.Forward(data.Inputs(start, len));
      torch::Tensor labels = data.labels.narrow(0, start, len);
      loss_sum += torch::cross_entropy_loss(logits, labels,
                                            /*weight=*/{}, at::Reduction::Sum)
                      .item<double>();
      correct += logits.argmax(1).eq(labels).sum().item<int64_t>();
    }
    model.SetTraining(true);
    r.examples = data.size();
    r.accuracy = static_cast<double>(correct) / data.size();
    r.loss = loss_sum / data.size();
    return r;
  } catch (const c10::Error& e) {
    return TorchError("evaluate", e);
  }
}

int64_t ParameterBytes(Model& model) {
  int64_t bytes = 0;
  for (auto& [name, t] : model.Parameters()) {
    bytes += t.numel() * static_cast<int64_t>(t.element_size());
  }
  return bytes;
}

std::vector<double> ReportedScores(const std::vector<LayerScores>& scores,
                                   const std::string& metric) {
  std::vector<double> out;
  for (const LayerScores& s : scores) {
    out.push_back(metric == "rgn"   ? s.rgn
                  : metric == "snr" ? s.snr
                                    : s.sq_grad_norm);
  }
  return out;
}

}  // namespace layerfl

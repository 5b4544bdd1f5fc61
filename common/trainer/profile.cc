#include "common/trainer/profile.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/util/status_macros.h"

namespace layerfl {
namespace {

struct Measured {
  double seconds = 0;  // median per step
  int64_t bytes = 0;   // peak
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

absl::StatusOr<Measured> MeasureSet(const SelectiveTrainer& trainer,
                                    Model& model, const Examples& data,
                                    const std::vector<std::string>& groups,
                                    const ProfileOptions& o) {
  std::vector<double> times;
  Measured m;
  for (int r = 0; r <= o.reps; ++r) {
    ASSIGN_OR_RETURN(TrainResult result,
                     trainer.Train(model, data, groups, 1000 + r));
    if (r == 0) continue;  // warm-up
    times.push_back(result.usage.seconds / o.steps);
    m.bytes = std::max(m.bytes, result.usage.peak_bytes);
  }
  m.seconds = Median(times);
  return m;
}

std::string Machine() {
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  std::string cpu = "unknown-cpu";
  std::ifstream info("/proc/cpuinfo");
  for (std::string line; std::getline(info, line);) {
    if (line.rfind("model name", 0) == 0) {
      cpu = line.substr(line.find(':') + 2);
      break;
    }
  }
  for (char& c : cpu) {
    if (c == ' ') c = '_';
  }
  return absl::StrCat(host, "/", cpu);
}

uint64_t Fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return h;
}

// The indices of the groups that are not frozen, in model order.
std::vector<int> TrainableGroups(const Model& model) {
  std::vector<int> trainable;
  for (int l = 0; l < static_cast<int>(model.groups().size()); ++l) {
    if (!model.groups()[l].frozen) trainable.push_back(l);
  }
  return trainable;
}

// Seconds of the scoring pass from each group upward (median over
// options.reps calls after a warm-up, per trainable group); a frozen group
// scores from the next trainable one above it, above the last there is
// nothing to score (0).
absl::StatusOr<std::vector<double>> MeasureScoringFrom(
    const SelectiveTrainer& trainer, Model& model, const Examples& data,
    const ProfileOptions& options) {
  const std::vector<LayerGroup>& all = model.groups();
  const int g = static_cast<int>(all.size());
  std::vector<double> out(g, 0.0);
  double above = 0.0;  // the value of the next trainable group up
  for (int l = g - 1; l >= 0; --l) {
    if (all[l].frozen) {
      out[l] = above;
      continue;
    }
    std::vector<double> times;
    for (int r = 0; r <= options.reps; ++r) {
      ResourceUsage usage;
      RETURN_IF_ERROR(
          trainer.Importance(model, data, 4000 + r, &usage, l).status());
      if (r > 0) times.push_back(usage.seconds);
    }
    out[l] = above = Median(times);
  }
  return out;
}

}  // namespace

absl::StatusOr<TrainingProfile> ProfileTraining(
    Model& model, const Examples& data, const TrainConfig& train,
    const ImportanceConfig& importance, const ProfileOptions& options) {
  if (options.steps < 1 || options.reps < 1) {
    return absl::InvalidArgumentError("profile: steps and reps must be >= 1");
  }
  TrainConfig measured = train;
  measured.lr = 0;  // the weights stay where they are
  measured.local_steps = options.steps;
  measured.local_epochs = 0;
  const SelectiveTrainer trainer(measured, importance);
  const std::vector<LayerGroup>& all = model.groups();
  const int g = static_cast<int>(all.size());
  const std::vector<int> trainable = TrainableGroups(model);
  const int k = static_cast<int>(trainable.size());

  TrainingProfile p;
  for (const LayerGroup& group : all) p.groups.push_back(group.name);
  p.batch_size = train.batch_size;
  p.machine = Machine();
  p.step_per_group_s.assign(g, 0);
  p.step_depth_s.assign(g, 0);
  p.per_group_bytes.assign(g, 0);
  p.depth_bytes.assign(g, 0);

  ASSIGN_OR_RETURN(Measured none,
                   MeasureSet(trainer, model, data, {}, options));
  std::vector<Measured> single(k), suffix(k);
  for (int j = 0; j < k; ++j) {
    ASSIGN_OR_RETURN(single[j], MeasureSet(trainer, model, data,
                                           {all[trainable[j]].name}, options));
  }
  for (int j = 0; j + 1 < k; ++j) {
    std::vector<std::string> names;
    for (int i = j; i < k; ++i) names.push_back(all[trainable[i]].name);
    ASSIGN_OR_RETURN(suffix[j],
                     MeasureSet(trainer, model, data, names, options));
  }
  if (k > 0) suffix[k - 1] = single[k - 1];

  // One unit at a time: the same differences for seconds and for bytes.
  const auto decompose = [&](auto get, double fixed, std::vector<double>& w,
                             std::vector<double>& a) {
    std::vector<double> rest(k, 0), wt(k, 0), depth(k + 1, 0);
    for (int j = 0; j < k; ++j) {
      rest[j] = std::max(0.0, get(suffix[j]) - get(single[j]));
    }
    for (int j = k - 1; j >= 1; --j) {
      wt[j] = std::max(0.0, rest[j - 1] - rest[j]);
      depth[j] = std::max(depth[j + 1], get(single[j]) - fixed - wt[j]);
    }
    if (k > 0) {
      depth[0] = depth[1 < k ? 1 : k];
      wt[0] = std::max(0.0, get(single[0]) - fixed - depth[0]);
    }
    for (int j = 0; j < k; ++j) {
      w[trainable[j]] = wt[j];
      a[trainable[j]] = depth[j] - depth[j + 1];
    }
  };
  p.step_fixed_s = none.seconds;
  decompose([](const Measured& m) { return m.seconds; }, none.seconds,
            p.step_per_group_s, p.step_depth_s);
  std::vector<double> wb(g, 0), ab(g, 0);
  decompose([](const Measured& m) { return static_cast<double>(m.bytes); },
            static_cast<double>(none.bytes), wb, ab);
  p.fixed_bytes = none.bytes;
  for (int l = 0; l < g; ++l) {
    p.per_group_bytes[l] = static_cast<int64_t>(std::ceil(wb[l]));
    p.depth_bytes[l] = static_cast<int64_t>(std::ceil(ab[l]));
  }

  RETURN_IF_ERROR(MeasureScoring(trainer, model, data, options, p));
  RETURN_IF_ERROR(p.Validate());
  return p;
}

absl::Status MeasureScoring(const SelectiveTrainer& trainer, Model& model,
                            const Examples& data,
                            const ProfileOptions& options,
                            TrainingProfile& p) {
  const std::vector<LayerGroup>& all = model.groups();
  const int g = static_cast<int>(all.size());
  const std::vector<int> trainable = TrainableGroups(model);
  const int k = static_cast<int>(trainable.size());
  std::vector<double> scoring;
  for (int r = 0; r <= options.reps; ++r) {
    ResourceUsage usage;
    ASSIGN_OR_RETURN(std::vector<LayerScores> scores,
                     trainer.Importance(model, data, 2000 + r, &usage));
    (void)scores;
    if (r == 0) continue;
    scoring.push_back(usage.seconds);
  }
  p.scoring_s = Median(scoring);
  // The scoring pass from each trainable group upward (peaks are the same
  // every time: one call each); a frozen group scores from the next
  // trainable one above it, and above the last there is nothing to score.
  p.scoring_bytes.assign(g, 0);
  std::vector<int64_t> from_trainable(k, 0);
  for (int j = 0; j < k; ++j) {
    ResourceUsage usage;
    RETURN_IF_ERROR(
        trainer.Importance(model, data, 3000 + j, &usage, trainable[j])
            .status());
    from_trainable[j] = usage.peak_bytes;
  }
  for (int l = 0, j = 0; l < g; ++l) {
    while (j < k && trainable[j] < l) ++j;
    p.scoring_bytes[l] = j < k ? from_trainable[j] : ParameterBytes(model);
  }
  ASSIGN_OR_RETURN(p.scoring_from_s,
                   MeasureScoringFrom(trainer, model, data, options));
  return absl::OkStatus();
}

absl::StatusOr<TrainingProfile> CachedTrainingProfile(
    const std::string& cache_dir, Model& model, const Examples& data,
    const TrainConfig& train, const ImportanceConfig& importance, int threads,
    const ProfileOptions& options) {
  // The training costs do not depend on how scores are computed: they are
  // cached under a key without the scoring pass (every strategy of a run
  // then prices training alike), the whole profile under one with it.
  std::string train_key = absl::StrCat(
      Machine(), "|batch=", train.batch_size, "|threads=", threads,
      "|opt=", train.optimizer, train.momentum > 0 ? "+m" : "",
      "|steps=", options.steps, "|groups=");
  for (const LayerGroup& group : model.groups()) {
    absl::StrAppend(&train_key, group.name, ":", group.num_params,
                    group.frozen ? "f" : "", ",");
  }
  const std::string key = absl::StrCat(
      train_key, "|scoring=", importance.batches,
      importance.batch_size > 0 ? absl::StrCat("x", importance.batch_size)
                                : std::string(),
      "|metric=", importance.metric);
  const auto path_of = [&](const char* kind, const std::string& k) {
    return cache_dir.empty() ? std::string()
                             : absl::StrFormat("%s/%s-%016x.txt", cache_dir,
                                               kind, Fnv1a(k));
  };
  const std::string path = path_of("profile", key);
  const std::string train_path = path_of("training", train_key);
  const auto read = [](const std::string& file)
      -> std::optional<TrainingProfile> {
    if (file.empty()) return std::nullopt;
    std::ifstream in(file);
    std::stringstream text;
    text << in.rdbuf();
    if (!in) return std::nullopt;
    absl::StatusOr<TrainingProfile> cached = TrainingProfile::Parse(text.str());
    if (!cached.ok()) return std::nullopt;
    return *std::move(cached);
  };
  const auto write = [&](const std::string& file, const TrainingProfile& p) {
    if (file.empty()) return;
    std::error_code ec;
    std::filesystem::create_directories(cache_dir, ec);
    const std::string tmp = file + ".tmp";
    std::ofstream out(tmp, std::ios::trunc);
    out << p.Serialize();
    out.close();
    if (!out || std::rename(tmp.c_str(), file.c_str()) != 0) {
      std::remove(tmp.c_str());  // the profile is still good; only uncached
    }
  };
  std::optional<TrainingProfile> found = read(path);
  std::optional<TrainingProfile> training = read(train_path);
  if (found.has_value() && !found->scoring_from_s.empty()) {
    if (!training.has_value()) write(train_path, *found);
    found->machine = Machine();
    return *std::move(found);
  }
  TrainingProfile p;
  if (found.has_value() || training.has_value()) {
    // The training costs as cached (runs that used them keep their costs);
    // the scoring pass measured for this configuration (or, for a profile
    // cached before the pass was measured per depth, only that part).
    TrainConfig measured = train;
    measured.lr = 0;
    const SelectiveTrainer trainer(measured, importance);
    if (found.has_value()) {
      p = *std::move(found);
      ASSIGN_OR_RETURN(p.scoring_from_s,
                       MeasureScoringFrom(trainer, model, data, options));
    } else {
      p = *training;
      RETURN_IF_ERROR(MeasureScoring(trainer, model, data, options, p));
    }
  } else {
    ASSIGN_OR_RETURN(p,
                     ProfileTraining(model, data, train, importance, options));
    p.threads = threads;
  }
  RETURN_IF_ERROR(p.Validate());
  write(path, p);
  if (!training.has_value()) write(train_path, p);
  p.machine = Machine();
  return p;
}

}  // namespace layerfl

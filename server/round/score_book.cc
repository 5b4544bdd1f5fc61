#include "server/round/score_book.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace layerfl {

const char* ScoreSourceName(ScoreSource source) {
  switch (source) {
    case ScoreSource::kPass:
      return "pass";
    case ScoreSource::kTrain:
      return "train";
    default:
      return "cohort";
  }
}

ScoreBook::Client& ScoreBook::At(const std::string& client) {
  Client& c = clients_[client];
  if (c.entries.size() != static_cast<size_t>(num_layers_)) {
    c.entries.resize(num_layers_);
  }
  return c;
}

void ScoreBook::Record(const std::string& client, int layer, double value,
                       int64_t round, ScoreSource source) {
  if (layer < 0 || layer >= num_layers_) return;
  ScoreEntry& e = At(client).entries[layer];
  if (round < e.round) return;
  e = ScoreEntry{value, round, source};
}

void ScoreBook::RecordPass(const std::string& client, int64_t round) {
  Client& c = At(client);
  c.last_pass = std::max(c.last_pass, round);
}

bool ScoreBook::Has(const std::string& client) const {
  auto it = clients_.find(client);
  if (it == clients_.end()) return false;
  for (const ScoreEntry& e : it->second.entries) {
    if (e.round >= 0) return true;
  }
  return false;
}

int64_t ScoreBook::LastPass(const std::string& client) const {
  auto it = clients_.find(client);
  return it == clients_.end() ? -1 : it->second.last_pass;
}

std::vector<double> ScoreBook::CohortMeans() const {
  std::vector<double> sum(num_layers_, 0.0);
  std::vector<int> count(num_layers_, 0);
  for (const auto& [id, c] : clients_) {
    for (int l = 0; l < num_layers_; ++l) {
      if (c.entries[l].round < 0) continue;
      sum[l] += c.entries[l].value;
      ++count[l];
    }
  }
  for (int l = 0; l < num_layers_; ++l) {
    if (count[l] > 0) sum[l] /= count[l];
  }
  return sum;
}

SeenScores ScoreBook::For(const std::string& client, int64_t round,
                          double decay, const std::vector<int>& frozen) const {
  return For(client, round, decay, CohortMeans(), frozen);
}

SeenScores ScoreBook::For(const std::string& client, int64_t round,
                          double decay, const std::vector<double>& cohort_means,
                          const std::vector<int>& frozen) const {
  auto own = clients_.find(client);
  SeenScores out;
  out.scores.assign(num_layers_, 0.0);
  out.age.assign(num_layers_, -1);
  out.source.assign(num_layers_, ScoreSource::kCohort);
  for (int l = 0; l < num_layers_; ++l) {
    if (std::find(frozen.begin(), frozen.end(), l) != frozen.end()) continue;
    const double cohort = cohort_means[l];
    const ScoreEntry* e =
        own == clients_.end() ? nullptr : &own->second.entries[l];
    if (e == nullptr || e->round < 0) {
      out.scores[l] = cohort;
      continue;
    }
    const int64_t age = std::max<int64_t>(0, round - e->round);
    const double w = std::pow(decay, static_cast<double>(age));
    out.scores[l] = w * e->value + (1.0 - w) * cohort;
    out.age[l] = age;
    out.source[l] = e->source;
  }
  return out;
}

std::string ScoreBook::Serialize() const {
  std::string out;
  for (const auto& [id, c] : clients_) {
    absl::StrAppend(&out, "@scores\t", id, "\t", c.last_pass, "\t");
    for (size_t l = 0; l < c.entries.size(); ++l) {
      const ScoreEntry& e = c.entries[l];
      const char src = e.source == ScoreSource::kPass    ? 'p'
                       : e.source == ScoreSource::kTrain ? 't'
                                                         : 'c';
      absl::StrAppend(&out, l ? "," : "", absl::StrFormat("%.17g", e.value),
                      "/", e.round, "/", std::string(1, src));
    }
    out += "\n";
  }
  return out;
}

absl::Status ScoreBook::RestoreLine(
    const std::vector<absl::string_view>& parts) {
  const auto bad = [&](absl::string_view what) {
    return absl::DataLossError(
        absl::StrCat("checkpoint engine state: client '",
                     parts.size() > 1 ? parts[1] : "", "': bad ", what));
  };
  if (parts.size() != 4 || parts[0] != "@scores") return bad("scores line");
  Client c;
  if (!absl::SimpleAtoi(parts[2], &c.last_pass)) return bad("pass round");
  for (absl::string_view field :
       absl::StrSplit(parts[3], ',', absl::SkipEmpty())) {
    std::vector<absl::string_view> f = absl::StrSplit(field, '/');
    ScoreEntry e;
    if (f.size() != 3 || !absl::SimpleAtod(f[0], &e.value) ||
        !absl::SimpleAtoi(f[1], &e.round) || f[2].size() != 1 ||
        !std::isfinite(e.value) || e.value < 0) {
      return bad("score");
    }
    e.source = f[2] == "p"   ? ScoreSource::kPass
               : f[2] == "t" ? ScoreSource::kTrain
                             : ScoreSource::kCohort;
    c.entries.push_back(e);
  }
  if (c.entries.size() != static_cast<size_t>(num_layers_)) {
    return bad("number of scores");
  }
  clients_[std::string(parts[1])] = std::move(c);
  return absl::OkStatus();
}

}  // namespace layerfl

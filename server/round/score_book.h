#ifndef LAYERFL_SERVER_ROUND_SCORE_BOOK_H_
#define LAYERFL_SERVER_ROUND_SCORE_BOOK_H_

// The coordinator's memory of the clients' importance scores when they come
// from training (importance.source: train): per client and layer group, the
// latest score, the round at whose global model it was measured, and where
// it came from (a scoring pass, or the first step of the client's local
// training, which is taken at the global model). Selection reads each
// client's scores through For(): an own score of age a (rounds since it was
// measured) counts decay^a, the cohort's mean for that group (over every
// client that measured it, at any age) the rest; a group the client never
// measured reads the cohort's mean, one nobody measured 0.
//
// Torch-free; thread-compatible (the engine guards it with its lock).

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace layerfl {

enum class ScoreSource { kCohort, kPass, kTrain };

// "cohort", "pass" or "train" (metrics.jsonl's score_source).
const char* ScoreSourceName(ScoreSource source);

struct ScoreEntry {
  double value = 0;
  int64_t round = -1;  // -1: never measured
  ScoreSource source = ScoreSource::kCohort;
};

// What selection sees of one client in one round: per group, the score, its
// age in rounds (-1 when the cohort's mean stands in) and where it came from.
struct SeenScores {
  std::vector<double> scores;
  std::vector<int64_t> age;
  std::vector<ScoreSource> source;
};

class ScoreBook {
 public:
  explicit ScoreBook(int num_layers = 0) : num_layers_(num_layers) {}

  int num_layers() const { return num_layers_; }

  // Records `client`'s score of group `layer` measured at the global model
  // of `round`, replacing an older one (a score of an older round than the
  // one held is ignored). `layer` must be in [0, num_layers), `value` finite
  // and >= 0 (the engine checks before it records).
  void Record(const std::string& client, int layer, double value,
              int64_t round, ScoreSource source);
  // Marks that `client` ran a scoring pass at `round` (for refresh periods).
  void RecordPass(const std::string& client, int64_t round);

  // Whether `client` has any score, and the round of its last scoring pass
  // (-1 when none).
  bool Has(const std::string& client) const;
  int64_t LastPass(const std::string& client) const;

  // `client`'s scores as selection reads them in `round` (see the top of
  // this file); decay in (0, 1]. Groups in `frozen` (indices) read 0.
  SeenScores For(const std::string& client, int64_t round, double decay,
                 const std::vector<int>& frozen = {}) const;
  // The same with the cohort's means given (CohortMeans(), computed once for
  // every participant of a round instead of once each).
  SeenScores For(const std::string& client, int64_t round, double decay,
                 const std::vector<double>& cohort,
                 const std::vector<int>& frozen) const;
  // Per group, the mean of every client's score of it; 0 where none has one.
  std::vector<double> CohortMeans() const;

  // Lines of the engine state, one per client:
  //   "@scores\t<id>\t<pass round>\t<value>/<round>/<p|t|c>,..."
  // values printed with 17 significant digits (they read back exactly).
  std::string Serialize() const;
  // Reads one such line split on tabs (parts[0] == "@scores"); DataLoss
  // naming the client when a field is malformed.
  absl::Status RestoreLine(const std::vector<absl::string_view>& parts);

 private:
  struct Client {
    std::vector<ScoreEntry> entries;
    int64_t last_pass = -1;
  };
  Client& At(const std::string& client);

  int num_layers_;
  std::map<std::string, Client> clients_;
};

}  // namespace layerfl

#endif  // LAYERFL_SERVER_ROUND_SCORE_BOOK_H_

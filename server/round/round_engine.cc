#include "server/round/round_engine.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "common/privacy/dp.h"
#include "common/privacy/noise.h"
#include "common/privacy/rdp_accountant.h"
#include "common/util/secret.h"
#include "common/util/status_macros.h"
#include "nlohmann/json.hpp"
#include "server/round/async_engine.h"
#include "server/round/engine_util.h"
#include "server/round/score_book.h"
#include "server/selection/budget.h"
#include "server/selection/rng.h"

namespace layerfl {
namespace {

// Attempts of one round a participant may break without using up
// federated.max_round_retries (the implicated sit out the next ones).
constexpr int kMaxParticipantAborts = 3;

// kAdvertise, kShareKeys and kUnmask only with secure aggregation.
enum class Phase {
  kIdle,
  kScoring,
  kAdvertise,
  kShareKeys,
  kTraining,
  kUnmask
};

const char* PhaseName(Phase phase) {
  switch (phase) {
    case Phase::kIdle:
      return "not running";
    case Phase::kScoring:
      return "scoring";
    case Phase::kAdvertise:
      return "advertising keys";
    case Phase::kShareKeys:
      return "sharing keys";
    case Phase::kTraining:
      return "training";
    case Phase::kUnmask:
      return "unmasking";
  }
  return "?";
}

const char* PhaseWhat(Phase phase) {
  switch (phase) {
    case Phase::kScoring:
      return "scores";
    case Phase::kAdvertise:
      return "key advert";
    case Phase::kShareKeys:
      return "key shares";
    case Phase::kUnmask:
      return "unmask response";
    default:
      return "update";
  }
}

struct Slot {
  ClientInfo info;
  std::vector<double> scores;
  bool scores_now = false;  // runs a scoring pass this round
  int score_from = 0;       // ... from this group upward
  SeenScores seen;          // importance.source train: what selection saw
  bool answered = false;  // scores (scoring) or update (training) received
  bool dropped = false;   // missed a deadline or left
  bool uploaded = false;  // its update is in the round's sums
  std::vector<std::string> layers;
  ClientUsage usage;
};

double Mib(int64_t bytes) { return static_cast<double>(bytes) / kBytesPerMiB; }

class RoundEngineImpl : public RoundEngine {
 public:
  RoundEngineImpl(const RoundEngineOptions& options, ModelWeights initial,
                  Deps deps)
      : options_(options),
        deps_(deps),
        global_(std::move(initial)),
        clip_norm_(options.privacy.clip_norm) {
    book_ = ScoreBook(static_cast<int>(global_.layers.size()));
  }

  absl::Status Resume() {
    if (deps_.store == nullptr) return absl::OkStatus();
    ASSIGN_OR_RETURN(std::optional<Checkpoint> ckpt, deps_.store->LoadLatest());
    if (!ckpt.has_value()) return absl::OkStatus();
    RETURN_IF_ERROR(CheckSameStructure(global_, ckpt->weights, ckpt->round));
    if (IsAsyncEngineState(ckpt->engine_state)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the checkpoint of round ", ckpt->round,
          " was written by an asynchronous run (federated.mode: async); a "
          "synchronous run cannot continue it (start in a fresh "
          "federated.run_dir)"));
    }
    RETURN_IF_ERROR(deps_.selector->RestoreState(ckpt->selection_state));
    absl::MutexLock lock(&mu_);
    RETURN_IF_ERROR(RestoreEngineState(ckpt->engine_state));
    global_ = std::move(ckpt->weights);
    committed_ = ckpt->round;
    resumed_ = true;
    return absl::OkStatus();
  }

  absl::Status Join(const ClientInfo& client) override {
    RETURN_IF_ERROR(ValidateJoin(client));
    absl::MutexLock lock(&mu_);
    joined_[client.id] = client;
    return absl::OkStatus();
  }

  void Leave(const std::string& client_id) override {
    absl::MutexLock lock(&mu_);
    joined_.erase(client_id);
    auto it = slots_.find(client_id);
    if (it != slots_.end() && !it->second.answered) {
      it->second.dropped = true;
      MaybeAdvance();
    }
  }

  absl::Status StartRound() override {
    absl::MutexLock lock(&mu_);
    RETURN_IF_ERROR(fatal_);
    if (finished_locked()) {
      return absl::FailedPreconditionError("the run is finished");
    }
    if (phase_ != Phase::kIdle) {
      return absl::FailedPreconditionError(
          absl::StrCat("round ", running_round(), " is still running"));
    }
    if (static_cast<int>(joined_.size()) < options_.min_clients) {
      return absl::FailedPreconditionError(absl::StrCat(
          "only ", joined_.size(), " clients joined, ", options_.min_clients,
          " needed (federated.min_clients)"));
    }
    const int64_t round = running_round();
    std::vector<std::string> ids;
    // After a participant broke an attempt (BarSuspects): without every
    // implicated client if enough are left, else without the ones that
    // implicated themselves, else (barring never stops a round) everyone.
    const auto draw = [this](bool skip_suspected, bool skip_barred)
                          ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      std::vector<std::string> out;
      for (const auto& [id, info] : joined_) {
        if ((skip_barred && barred_.count(id)) ||
            (skip_suspected && suspected_.count(id))) {
          continue;
        }
        out.push_back(id);
      }
      return out;
    };
    ids = draw(true, true);
    if (static_cast<int>(ids.size()) < options_.min_clients) {
      ids = draw(false, true);
    }
    if (static_cast<int>(ids.size()) < options_.min_clients) {
      ids = draw(false, false);
    }
    const PrivacyOptions& p = options_.privacy;
    if (p.enabled && p.insecure_sampling_seed == 0) {
      SecureShuffle(ids);
    } else {
      DeterministicRng rng(
          (p.enabled ? p.insecure_sampling_seed : options_.seed) ^
          MixSeed(round * 1000003 + attempt_));
      rng.Shuffle(ids);
    }
    if (options_.clients_per_round > 0 &&
        static_cast<int>(ids.size()) > options_.clients_per_round) {
      ids.resize(options_.clients_per_round);
    }
    std::sort(ids.begin(), ids.end());
    sample_rate_ = static_cast<double>(ids.size()) / joined_.size();
    scores_released_ = false;
    slots_.clear();
    for (const std::string& id : ids) slots_[id].info = joined_[id];

    record_ = RoundRecord();
    record_.budget_unit = options_.budget_unit;
    record_.round = round;
    record_.attempt = attempt_;
    phase_start_ = deps_.clock->Now();
    bool score = false;
    if (deps_.selector->NeedsScores() && options_.scores_from_training) {
      // Only the clients without scores (or due a refresh) run a pass.
      for (auto& [id, slot] : slots_) {
        const int64_t last = book_.LastPass(id);
        slot.scores_now =
            (last < 0 && !book_.Has(id)) ||
            (last >= 0 && options_.score_refresh_period > 0 &&
             round - last >= options_.score_refresh_period);
        score = score || slot.scores_now;
      }
    } else if (deps_.selector->NeedsScores()) {
      score = (round - 1) % options_.selection_period == 0;
      for (const std::string& id : ids) {
        if (!last_scores_.count(id)) score = true;
      }
      for (auto& [id, slot] : slots_) slot.scores_now = score;
    }
    if (options_.privacy.enabled && options_.privacy.target_epsilon > 0 &&
        ExceedsTargetEpsilon(score)) {
      // The run ends here, as if its last round had been committed.
      privacy_spent_ = true;
      slots_.clear();
      return absl::OkStatus();
    }
    if (score) {
      SetPhase(Phase::kScoring);
      deadline_ = phase_start_ + options_.round_deadline;
      for (auto& [id, slot] : slots_) {
        if (slot.scores_now) {
          slot.score_from = ScoreFrom(slot.info);
        } else {
          slot.answered = true;  // selected from the scores it has
        }
      }
      return absl::OkStatus();
    }
    for (auto& [id, slot] : slots_) {
      auto it = last_scores_.find(id);
      if (it != last_scores_.end()) slot.scores = it->second;
    }
    EnterTraining();
    return fatal_;
  }

  Task TaskFor(const std::string& client_id) override {
    absl::MutexLock lock(&mu_);
    Task task;
    if (finished_locked()) {
      task.kind = TaskKind::kFinished;
      task.round = committed_;
      return task;
    }
    auto it = slots_.find(client_id);
    if (phase_ == Phase::kIdle || it == slots_.end() || it->second.answered ||
        it->second.dropped) {
      return task;
    }
    task.round = running_round();
    task.deadline = deadline_;
    if (phase_ == Phase::kScoring) {
      task.kind = TaskKind::kScore;
      task.score_from = it->second.score_from;
    } else if (phase_ == Phase::kAdvertise) {
      task.kind = TaskKind::kAdvertise;
      task.layers = it->second.layers;
    } else if (phase_ == Phase::kShareKeys) {
      task.kind = TaskKind::kShareKeys;
      task.roster = roster_;
    } else if (phase_ == Phase::kUnmask) {
      task.kind = TaskKind::kUnmask;
      task.unmask = unmask_;
    } else {
      task.kind = TaskKind::kTrain;
      task.layers = it->second.layers;
      if (secagg_ != nullptr) task.shares = secagg_->SharesFor(client_id);
      for (const std::string& layer : task.layers) {
        auto n = layer_participants_.find(layer);
        task.layer_participants.push_back(
            n == layer_participants_.end() ? 0 : n->second);
      }
    }
    return task;
  }

  // The lowest group `client` scores from: as deep as its memory allows
  // and, with importance.depth affordable, no lower than it can afford to
  // train with the pass priced in.
  int ScoreFrom(const ClientInfo& client) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    SelectionCandidate c;
    c.id = client.id;
    c.num_samples = client.num_samples;
    c.budget = client.budget;
    c.scored = true;
    c.profile = client.profile;
    c.speed = client.speed;
    c.max_time_s = client.max_time_s;
    c.max_memory_mb = client.max_memory_mb;
    return std::max(
        layerfl::ScoreFrom(client, options_.budget_unit,
                           static_cast<int>(global_.layers.size())),
        deps_.selector->ScoringDepth(c));
  }

  absl::Status SubmitScores(const std::string& client_id, int64_t round,
                            const std::vector<double>& scores) override {
    absl::MutexLock lock(&mu_);
    Slot* slot = nullptr;
    RETURN_IF_ERROR(Admit(client_id, round, Phase::kScoring, &slot));
    if (absl::Status bad = CheckScores(client_id, scores, global_); !bad.ok()) {
      CountRejection(bad);
      return bad;
    }
    slot->scores = scores;
    slot->answered = true;
    scores_released_ = true;
    last_scores_[client_id] = scores;
    if (options_.scores_from_training) {
      book_.RecordPass(client_id, round);
      for (size_t l = static_cast<size_t>(slot->score_from); l < scores.size();
           ++l) {
        book_.Record(client_id, static_cast<int>(l), scores[l], round,
                     ScoreSource::kPass);
      }
    }
    MaybeAdvance();
    return absl::OkStatus();
  }

  absl::Status CheckUpload(const std::string& client_id,
                           int64_t round) override {
    absl::MutexLock lock(&mu_);
    Slot* slot = nullptr;
    return Admission(client_id, round, Phase::kTraining, &slot);
  }

  absl::Status SubmitUpdate(const std::string& client_id, int64_t round,
                            int64_t num_samples,
                            const std::vector<LayerDelta>& update) override {
    return AddUpdate(client_id, round, num_samples, update, nullptr);
  }

  absl::Status SubmitUpdateFrom(const std::string& client_id, int64_t round,
                                int64_t num_samples,
                                std::vector<LayerDelta> shapes,
                                DeltaSource& values) override {
    return AddUpdate(client_id, round, num_samples, shapes, &values);
  }

  // SubmitUpdate's body; with `source`, the values of `update` are empty
  // and read from it (LayerAggregator::AddFrom).
  absl::Status AddUpdate(const std::string& client_id, int64_t round,
                         int64_t num_samples,
                         const std::vector<LayerDelta>& update,
                         DeltaSource* source) {
    absl::MutexLock lock(&mu_);
    Slot* slot = nullptr;
    RETURN_IF_ERROR(Admit(client_id, round, Phase::kTraining, &slot));
    if (secagg_ != nullptr) {
      return Refuse(RejectReason::kProtocol,
                    absl::StrCat("client '", client_id,
                                 "' sent a plain update; this run aggregates "
                                 "securely (privacy.secure_aggregation)"));
    }
    if (num_samples > kMaxSamples) {
      return Refuse(RejectReason::kBadSampleCount,
                    absl::StrCat("client '", client_id, "': num_samples ",
                                 num_samples, " is above 10^12"));
    }
    for (const LayerDelta& d : update) {
      if (!std::isfinite(d.score)) {
        return Refuse(RejectReason::kNonFinite,
                      absl::StrCat("client '", client_id, "': layer '",
                                   d.group, "': score ", d.score,
                                   " is not finite"));
      }
    }
    absl::Status added =
        source != nullptr
            ? aggregator_->AddFrom(client_id, num_samples, update,
                                   slot->layers, *source)
            : aggregator_->Add(client_id, num_samples, update, slot->layers);
    if (!added.ok()) {
      CountRejection(added);
      return added;
    }
    slot->answered = true;
    slot->uploaded = true;
    if (options_.scores_from_training) {
      for (const LayerDelta& d : update) {
        const int l = global_.Find(d.group);
        if (d.score >= 0 && l >= 0) {
          book_.Record(client_id, l, d.score, round, ScoreSource::kTrain);
        }
      }
    }
    for (const LayerDelta& d : update) {
      for (const Tensor32& t : d.tensors) {
        record_.bytes_up +=
            ShapeNumel(t.shape) * static_cast<int64_t>(sizeof(float));
      }
    }
    MaybeAdvance();
    return absl::OkStatus();
  }

  absl::Status SubmitAdvert(const std::string& client_id, int64_t round,
                            const SecAggAdvert& advert) override {
    absl::MutexLock lock(&mu_);
    Slot* slot = nullptr;
    RETURN_IF_ERROR(AdmitSecAgg(client_id, round, Phase::kAdvertise, &slot));
    if (advert.id != client_id) {
      return Refuse(RejectReason::kProtocol,
                    absl::StrCat("client '", client_id,
                                 "' sent the key advert of '", advert.id, "'"));
    }
    std::vector<int> layers;
    for (const std::string& group : slot->layers) {
      layers.push_back(global_.Find(group));
    }
    std::sort(layers.begin(), layers.end());
    RETURN_IF_ERROR(Protocol(secagg_->AddAdvert(advert, std::move(layers))));
    slot->answered = true;
    MaybeAdvance();
    return absl::OkStatus();
  }

  absl::Status SubmitShares(const std::string& client_id, int64_t round,
                            const std::vector<SecAggShare>& shares) override {
    absl::MutexLock lock(&mu_);
    Slot* slot = nullptr;
    RETURN_IF_ERROR(AdmitSecAgg(client_id, round, Phase::kShareKeys, &slot));
    RETURN_IF_ERROR(Protocol(secagg_->AddShares(client_id, shares)));
    slot->answered = true;
    MaybeAdvance();
    return absl::OkStatus();
  }

  absl::Status SubmitMasked(const std::string& client_id, int64_t round,
                            const SecAggMaskedInput& input) override {
    absl::MutexLock lock(&mu_);
    Slot* slot = nullptr;
    RETURN_IF_ERROR(AdmitSecAgg(client_id, round, Phase::kTraining, &slot));
    if (input.id != client_id) {
      return Refuse(
          RejectReason::kProtocol,
          absl::StrCat("client '", client_id, "' sent the masked update of '",
                       input.id, "'"));
    }
    RETURN_IF_ERROR(Protocol(secagg_->AddMaskedInput(input)));
    slot->answered = true;
    slot->uploaded = true;
    for (const std::vector<uint32_t>& layer : input.layers) {
      record_.bytes_up += static_cast<int64_t>(layer.size() * sizeof(uint32_t));
    }
    MaybeAdvance();
    return absl::OkStatus();
  }

  absl::Status SubmitUnmask(const std::string& client_id, int64_t round,
                            const SecAggUnmaskResponse& response) override {
    absl::MutexLock lock(&mu_);
    Slot* slot = nullptr;
    RETURN_IF_ERROR(AdmitSecAgg(client_id, round, Phase::kUnmask, &slot));
    if (response.id != client_id) {
      return Refuse(
          RejectReason::kProtocol,
          absl::StrCat("client '", client_id, "' sent the unmask response of '",
                       response.id, "'"));
    }
    if (absl::Status s = secagg_->AddUnmaskResponse(response); !s.ok()) {
      if (secagg_->BadResponders().count(client_id)) {
        // A share that does not match its dealer's commitment: the
        // responder is left out of the unmasking (its update stays in the
        // sums), the secrets are rebuilt from the others' shares.
        slot->dropped = true;
        participant_fault_ = true;
        absl::Status bad = Rejection(RejectReason::kProtocol, std::string(s.message()));
        ++record_.rejected["bad_share"];
        ++rejected_total_["bad_share"];
        MaybeAdvance();
        return bad;
      }
      return Protocol(s);
    }
    slot->answered = true;
    MaybeAdvance();
    return absl::OkStatus();
  }

  absl::Status ReportUsage(const std::string& client_id, int64_t round,
                           const ClientUsage& usage) override {
    RETURN_IF_ERROR(CheckUsage(client_id, usage));
    absl::MutexLock lock(&mu_);
    auto it = slots_.find(client_id);
    if (phase_ == Phase::kIdle || round != running_round() ||
        it == slots_.end()) {
      return absl::FailedPreconditionError(
          absl::StrCat("client '", client_id, "': usage for round ", round,
                       ", which it is not taking part in"));
    }
    MergeUsage(usage, it->second.usage);
    return absl::OkStatus();
  }

  absl::Status Tick() override {
    absl::MutexLock lock(&mu_);
    RETURN_IF_ERROR(fatal_);
    if (phase_ == Phase::kIdle || deps_.clock->Now() < deadline_) {
      return absl::OkStatus();
    }
    for (auto& [id, slot] : slots_) {
      if (!slot.answered) slot.dropped = true;
    }
    MaybeAdvance();
    return fatal_;
  }

  int64_t committed_round() const override {
    absl::MutexLock lock(&mu_);
    return committed_;
  }
  bool round_running() const override {
    absl::MutexLock lock(&mu_);
    return phase_ != Phase::kIdle;
  }
  std::string phase() const override {
    absl::MutexLock lock(&mu_);
    return PhaseName(phase_);
  }
  uint64_t task_epoch() const override {
    absl::MutexLock lock(&mu_);
    return task_epoch_;
  }
  bool finished() const override {
    absl::MutexLock lock(&mu_);
    return finished_locked();
  }
  double epsilon() const override {
    absl::MutexLock lock(&mu_);
    return options_.privacy.enabled
               ? accountant_.Epsilon(options_.privacy.delta)
               : 0.0;
  }
  bool resumed() const override {
    absl::MutexLock lock(&mu_);
    return resumed_;
  }
  ModelWeights global() const override {
    absl::MutexLock lock(&mu_);
    return global_;
  }
  void VisitGlobal(
      absl::FunctionRef<void(const ModelWeights&)> visit) const override {
    absl::MutexLock lock(&mu_);
    visit(global_);
  }
  std::vector<int64_t> layer_versions() const override {
    absl::MutexLock lock(&mu_);
    std::vector<int64_t> v;
    for (const LayerWeights& l : global_.layers) v.push_back(l.version);
    return v;
  }
  std::vector<RoundRecord> TakeRecords() override {
    absl::MutexLock lock(&mu_);
    std::vector<RoundRecord> out;
    out.swap(records_);
    return out;
  }
  std::map<std::string, int64_t> rejected_total() const override {
    absl::MutexLock lock(&mu_);
    return rejected_total_;
  }

 private:
  int64_t running_round() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return committed_ + 1;
  }
  // Every phase change goes through here: a task handed out as "wait" may
  // change only when a phase begins or ends or the run ends (task_epoch()).
  void SetPhase(Phase phase) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    phase_ = phase;
    ++task_epoch_;
  }

  bool finished_locked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return committed_ >= options_.rounds || privacy_spent_;
  }

  absl::Status Refuse(RejectReason reason, std::string detail)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    absl::Status s = Rejection(reason, std::move(detail));
    CountRejection(s);
    return s;
  }

  // A secure-aggregation result: only while the run aggregates securely.
  absl::Status AdmitSecAgg(const std::string& client_id, int64_t round,
                           Phase phase, Slot** slot)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!options_.secagg.enabled) {
      return Refuse(
          RejectReason::kProtocol,
          absl::StrCat("client '", client_id, "' sent a ", PhaseWhat(phase),
                       "; this run does not aggregate securely"));
    }
    return Admit(client_id, round, phase, slot);
  }

  // What common/secagg refused, as a counted kProtocol refusal.
  absl::Status Protocol(const absl::Status& s)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (s.ok()) return s;
    return Refuse(RejectReason::kProtocol, std::string(s.message()));
  }

  // The secure-aggregation step after `phase_` once every participant
  // answered or was dropped; false when the attempt must be abandoned.
  bool AdvanceSecAgg(int answered) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const absl::Time now = deps_.clock->Now();
    if (phase_ == Phase::kAdvertise) {
      const int t = std::max(
          2, static_cast<int>(
                 std::ceil(options_.secagg.threshold * answered - 1e-9)));
      auto replayed = options_.secagg.replay_roster.find(running_round());
      absl::StatusOr<SecAggRoster> roster = secagg_->Roster(
          t, replayed == options_.secagg.replay_roster.end()
                 ? 0
                 : replayed->second);
      if (!roster.ok()) return false;
      roster_ = std::make_shared<const SecAggRoster>(std::move(*roster));
      record_.secagg_roster = static_cast<int>(roster_->entries.size());
      SetPhase(Phase::kShareKeys);
    } else if (phase_ == Phase::kShareKeys) {
      SetPhase(Phase::kTraining);
    } else if (phase_ == Phase::kTraining) {
      // Whoever a peer's masked input accused (its shares did not
      // authenticate) is out of the round, counted as bad_share.
      const int64_t accused =
          static_cast<int64_t>(secagg_->Excluded().size());
      if (accused > 0) {
        record_.rejected["bad_share"] += accused;
        rejected_total_["bad_share"] += accused;
        participant_fault_ = true;
      }
      absl::StatusOr<SecAggUnmaskRequest> request = secagg_->UnmaskRequest();
      if (!request.ok()) return false;
      // The unmask step waits for the survivors only: an accused client, or
      // one whose keys too few survivors hold, uploaded but is not in the
      // sums.
      const std::set<std::string> survivors(request->survivors.begin(),
                                            request->survivors.end());
      for (auto& [id, slot] : slots_) {
        if (slot.uploaded && !survivors.count(id)) {
          slot.uploaded = false;
          slot.dropped = true;
        }
      }
      unmask_ =
          std::make_shared<const SecAggUnmaskRequest>(std::move(*request));
      SetPhase(Phase::kUnmask);
    } else {
      return false;
    }
    for (auto& [id, slot] : slots_) slot.answered = false;
    phase_start_ = now;
    deadline_ = now + options_.round_deadline;
    return true;
  }

  // The securely aggregated sums, dequantized and handed to the aggregator.
  absl::Status FoldSecureSums() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    ASSIGN_OR_RETURN(std::vector<std::vector<uint32_t>> sums, secagg_->Sums());
    const std::vector<int> survivors = secagg_->SurvivorsPerLayer();
    for (size_t l = 0; l < sums.size(); ++l) {
      if (survivors[l] == 0 || sums[l].empty()) continue;
      const std::vector<double> values =
          SecAggDequantize(sums[l], roster_->scale);
      const LayerWeights& layer = global_.layers[l];
      std::vector<std::vector<float>> tensors;
      size_t at = 0;
      for (const Tensor32& t : layer.tensors) {
        tensors.emplace_back(values.begin() + at,
                             values.begin() + at + t.values.size());
        at += t.values.size();
      }
      RETURN_IF_ERROR(aggregator_->AddLayerSum(layer.group, survivors[l],
                                               std::move(tensors)));
    }
    return absl::OkStatus();
  }

  void CountRejection(const absl::Status& s)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const std::string name = RefusalName(s);
    ++record_.rejected[name];
    ++rejected_total_[name];
  }

  // Checks that a result belongs to the running phase of the running round
  // and comes from a participant still owed an answer.
  absl::Status Admission(const std::string& client_id, int64_t round, Phase phase,
                     Slot** slot) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!joined_.count(client_id) && !slots_.count(client_id)) {
      return Rejection(RejectReason::kUnknownClient,
                    absl::StrCat("client '", client_id, "' has not joined"));
    }
    const char* what = PhaseWhat(phase);
    if (round != running_round() || phase_ != phase) {
      return Rejection(RejectReason::kStaleRound,
                    absl::StrCat("client '", client_id, "' sent ", what,
                                 " for round ", round, ", but round ",
                                 running_round(), " is ", PhaseName(phase_)));
    }
    auto it = slots_.find(client_id);
    if (it == slots_.end()) {
      return Rejection(RejectReason::kNotAssigned,
                    absl::StrCat("client '", client_id,
                                 "' is not a participant of round ", round));
    }
    if (it->second.dropped) {
      return Rejection(
          RejectReason::kStaleRound,
          absl::StrCat("client '", client_id, "' was dropped from round ",
                       round, " (deadline passed); its ", what,
                       " arrived too late"));
    }
    if (it->second.answered) {
      return Rejection(RejectReason::kDuplicate,
                    absl::StrCat("client '", client_id, "' already sent its ",
                                 what, " for round ", round));
    }
    *slot = &it->second;
    return absl::OkStatus();
  }

  // Admission, counted when refused.
  absl::Status Admit(const std::string& client_id, int64_t round, Phase phase,
                     Slot** slot) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    absl::Status s = Admission(client_id, round, phase, slot);
    if (!s.ok()) CountRejection(s);
    return s;
  }

  // The scores each client reported last (reused by rounds that do not
  // score), one client a line: "<id>\t<score>,<score>,...", doubles printed
  // with 17 significant digits so they read back exactly.
  std::string SaveEngineState() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::string out;
    for (const auto& [id, scores] : last_scores_) {
      absl::StrAppend(&out, id, "\t");
      for (size_t i = 0; i < scores.size(); ++i) {
        absl::StrAppend(&out, i ? "," : "",
                        absl::StrFormat("%.17g", scores[i]));
      }
      out += "\n";
    }
    out += book_.Serialize();
    if (options_.privacy.enabled) {
      // Client ids never start with '@'.
      absl::StrAppend(&out, "@privacy\t", absl::StrFormat("%a", clip_norm_),
                      "\t", accountant_.Serialize(), "\n");
      if (!options_.privacy.central) {
        absl::StrAppend(&out, "@privacy_coordinator\t",
                        coordinator_accountant_.Serialize(), "\n");
      }
    }
    return out;
  }

  absl::Status RestoreEngineState(const std::string& bytes)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    last_scores_.clear();
    book_ = ScoreBook(static_cast<int>(global_.layers.size()));
    bool privacy_restored = false, coordinator_restored = false;
    for (absl::string_view line :
         absl::StrSplit(bytes, '\n', absl::SkipEmpty())) {
      std::vector<absl::string_view> parts = absl::StrSplit(line, '\t');
      if (!parts.empty() && parts[0] == "@scores") {
        RETURN_IF_ERROR(book_.RestoreLine(parts));
        continue;
      }
      if (parts.size() == 2 && parts[0] == "@privacy_coordinator") {
        ASSIGN_OR_RETURN(coordinator_accountant_,
                         RdpAccountant::Parse(std::string(parts[1])));
        coordinator_restored = true;
        continue;
      }
      if (parts.size() == 3 && parts[0] == "@privacy") {
        clip_norm_ = std::strtod(std::string(parts[1]).c_str(), nullptr);
        if (!(clip_norm_ > 0) || !std::isfinite(clip_norm_)) {
          return absl::DataLossError("checkpoint engine state: bad clip norm");
        }
        ASSIGN_OR_RETURN(accountant_,
                         RdpAccountant::Parse(std::string(parts[2])));
        privacy_restored = true;
        continue;
      }
      if (parts.size() != 2) {
        return absl::DataLossError("checkpoint engine state: malformed line");
      }
      std::vector<double> scores;
      for (absl::string_view v :
           absl::StrSplit(parts[1], ',', absl::SkipEmpty())) {
        double d = 0;
        if (!absl::SimpleAtod(v, &d)) {
          return absl::DataLossError("checkpoint engine state: bad score");
        }
        scores.push_back(d);
      }
      last_scores_[std::string(parts[0])] = std::move(scores);
    }
    if (options_.privacy.enabled && !privacy_restored) {
      // Its rounds released updates nobody accounted: no epsilon holds.
      return absl::FailedPreconditionError(
          "the checkpoint was written by a run without privacy.dp; a private "
          "run cannot continue it (start in a fresh federated.run_dir)");
    }
    if (options_.privacy.enabled && !options_.privacy.central &&
        !coordinator_restored) {
      return absl::FailedPreconditionError(
          "the checkpoint keeps no epsilon against the coordinator (written "
          "before local mode accounted it); start in a fresh "
          "federated.run_dir");
    }
    return absl::OkStatus();
  }

  // Moves on when nobody is still owed an answer.
  void MaybeAdvance() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (phase_ == Phase::kIdle) return;
    int answered = 0, uploaded = 0;
    for (const auto& [id, slot] : slots_) {
      if (!slot.answered && !slot.dropped) return;
      if (slot.answered) ++answered;
      if (slot.uploaded) ++uploaded;
    }
    // Unmasking: the quorum counts the updates in the sums (a survivor that
    // falls silent now is still in them); the threshold is checked when the
    // sums are read.
    if (phase_ == Phase::kUnmask) answered = uploaded;
    if (answered < options_.min_clients ||
        (secagg_ != nullptr && answered < 2)) {
      Abandon(answered);
      return;
    }
    if (secagg_ != nullptr && phase_ != Phase::kScoring &&
        phase_ != Phase::kUnmask) {
      if (!AdvanceSecAgg(answered)) Abandon(answered);
      return;
    }
    if (phase_ == Phase::kScoring) {
      // Only clients that scored go on to train.
      for (auto& [id, slot] : slots_) {
        if (!slot.answered) continue;
        slot.answered = false;
      }
      EnterTraining();
    } else {
      Commit();
    }
  }

  void Abandon(int answered) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const int64_t round = running_round();
    bool unmasked = false;  // unmask shares arrived: sums may be known
    if (phase_ == Phase::kUnmask) {
      for (const auto& [id, slot] : slots_) unmasked |= slot.answered;
    }
    if (options_.privacy.enabled && unmasked) {
      // Whoever holds the masked inputs and those shares may have read the
      // noised sums: the update counts as released (with the scores).
      ComposeRound(WithScores(options_.privacy.noise_multiplier,
                              scores_released_));
    } else if (options_.privacy.enabled && scores_released_) {
      // The scores were released even though nothing of the round is kept.
      ComposeRound(options_.privacy.score_noise_multiplier);
    }
    if (participant_fault_ && secagg_ != nullptr) BarSuspects();
    SetPhase(Phase::kIdle);
    aggregator_.reset();
    secagg_.reset();
    roster_.reset();
    unmask_.reset();
    slots_.clear();
    ++attempt_;
    // An attempt a participant broke (shares that did not authenticate, a
    // lying unmask response, inconsistent shares) is retried without using
    // up the retries, up to kMaxParticipantAborts a round, and the clients
    // it implicates sit out this round's next attempts (BarSuspects).
    if (participant_fault_ && participant_aborts_ < kMaxParticipantAborts) {
      ++participant_aborts_;
    }
    participant_fault_ = false;
    if (attempt_ - participant_aborts_ > options_.max_round_retries) {
      fatal_ = absl::DeadlineExceededError(absl::StrCat(
          "round ", round, " missed its quorum (", answered, " of ",
          options_.min_clients, " clients answered) ", attempt_,
          " times (federated.max_round_retries = ", options_.max_round_retries,
          ")"));
    }
  }

  // Who sits out this round's next attempts after a participant broke one.
  // Barred (implicated by their own messages): an accuser that accused two
  // or more peers, and every client whose unmask shares or dealt shares did
  // not check out. Suspected (no proof either way): every accused client,
  // and an accuser that was the only one to accuse its peer. StartRound
  // leaves out both if enough clients remain, else the barred only: a
  // cheater removes itself with whoever it names, and cannot stall a round.
  void BarSuspects() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const std::map<std::string, std::vector<std::string>> accusations =
        secagg_->Accusations();
    std::map<std::string, int> accusers_of;
    for (const auto& [accuser, accused] : accusations) {
      for (const std::string& a : accused) ++accusers_of[a];
    }
    for (const auto& [accuser, accused] : accusations) {
      if (accused.size() >= 2) barred_.insert(accuser);
      for (const std::string& a : accused) {
        suspected_.insert(a);
        if (accusers_of[a] == 1) suspected_.insert(accuser);
      }
    }
    for (const std::string& id : secagg_->BadResponders()) barred_.insert(id);
    for (const std::string& id : secagg_->BadDealers()) barred_.insert(id);
  }

  void EnterTraining() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const absl::Time now = deps_.clock->Now();
    const bool scored = phase_ == Phase::kScoring;
    if (scored) {
      record_.phase_ms["score"] =
          absl::ToDoubleMilliseconds(now - phase_start_);
    }
    candidates_.clear();
    std::vector<std::string> ids;
    const bool from_book =
        options_.scores_from_training && deps_.selector->NeedsScores();
    const std::vector<double> cohort =
        from_book ? book_.CohortMeans() : std::vector<double>();
    for (auto& [id, slot] : slots_) {
      if (slot.dropped) continue;
      SelectionCandidate c;
      c.id = id;
      c.num_samples = slot.info.num_samples;
      c.budget = slot.info.budget;
      c.scores = slot.scores;
      if (from_book) {
        slot.seen = book_.For(id, running_round(), options_.score_decay,
                              cohort, /*frozen=*/{});
        c.scores = slot.seen.scores;
      }
      c.scored = scored && slot.scores_now;
      c.score_from = c.scored ? slot.score_from : 0;
      c.profile = slot.info.profile;
      c.speed = slot.info.speed;
      c.max_time_s = slot.info.max_time_s;
      c.max_memory_mb = slot.info.max_memory_mb;
      candidates_.push_back(std::move(c));
      ids.push_back(id);
    }
    absl::StatusOr<SelectionOutcome> outcome =
        deps_.selector->Select(candidates_, running_round());
    if (!outcome.ok()) {
      fatal_ =
          absl::Status(outcome.status().code(),
                       absl::StrCat("selection for round ", running_round(),
                                    " failed: ", outcome.status().message()));
      SetPhase(Phase::kIdle);
      return;
    }
    outcome_ = std::move(*outcome);
    for (size_t i = 0; i < ids.size(); ++i) {
      slots_[ids[i]].layers = outcome_.layers[i];
    }
    record_.objective = outcome_.objective;
    record_.upper_bound = outcome_.upper_bound;
    record_.gap = outcome_.gap;
    record_.solver_status = outcome_.solver_status;
    record_.solve_ms = outcome_.solve_ms;
    layer_participants_.clear();
    for (size_t i = 0; i < ids.size(); ++i) {
      for (const std::string& layer : outcome_.layers[i]) {
        ++layer_participants_[layer];
      }
    }
    AggregatorOptions aggregation = options_.aggregation;
    if (options_.privacy.enabled && options_.privacy.central) {
      aggregation.dp.clip_norm = clip_norm_;
      aggregation.dp.noise_std = UpdateMultiplier() * clip_norm_;
      aggregation.dp.noise_key = NoiseKeyFor("sums");
    }
    aggregator_ = std::make_unique<LayerAggregator>(global_, aggregation);
    SetPhase(Phase::kTraining);
    if (options_.secagg.enabled) {
      std::vector<int64_t> sizes;
      for (const LayerWeights& l : global_.layers) sizes.push_back(l.numel());
      secagg_ = std::make_unique<SecAggServer>(running_round(), 2, sizes,
                                               options_.secagg.value_range);
      SetPhase(Phase::kAdvertise);
    }
    phase_start_ = now;
    deadline_ = now + options_.round_deadline;
  }

  void Commit() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const absl::Time t0 = deps_.clock->Now();
    record_.phase_ms["train"] = absl::ToDoubleMilliseconds(t0 - phase_start_);
    const absl::Time w0 = absl::Now();
    std::vector<int64_t> before;
    for (const LayerWeights& l : global_.layers) before.push_back(l.version);
    if (secagg_ != nullptr) {
      absl::Status folded = FoldSecureSums();
      if (!folded.ok()) {
        // Too few revealed, or a revealed share did not check out.
        if (!secagg_->BadResponders().empty() ||
            !secagg_->BadDealers().empty()) {
          participant_fault_ = true;
        }
        CountRejection(
            Rejection(RejectReason::kProtocol, std::string(folded.message())));
        int answered = 0;
        for (const auto& [id, slot] : slots_) answered += slot.answered;
        Abandon(answered);
        return;
      }
      secagg_.reset();
      roster_.reset();
      unmask_.reset();
    }
    absl::StatusOr<AggregateStats> stats = aggregator_->Commit(global_);
    aggregator_.reset();
    if (!stats.ok()) {
      fatal_ = stats.status();
      SetPhase(Phase::kIdle);
      return;
    }
    for (size_t l = 0; l < global_.layers.size(); ++l) {
      if (global_.layers[l].version != before[l]) {
        record_.changed_layers.push_back(global_.layers[l].group);
      }
    }
    record_.phase_ms["aggregate"] =
        absl::ToDoubleMilliseconds(absl::Now() - w0);
    if (options_.privacy.enabled) AccountCommitted(*stats);
    for (size_t i = 0; i < candidates_.size(); ++i) {
      const SelectionCandidate& c = candidates_[i];
      const Slot& slot = slots_[c.id];
      ClientRoundRecord cr;
      cr.id = c.id;
      cr.budget = c.budget;
      cr.layers = slot.layers;
      cr.contributed = slot.uploaded;
      cr.scores = c.scores;
      if (c.scored) cr.score_from = c.score_from;
      if (options_.scores_from_training && !slot.seen.age.empty()) {
        cr.score_age = slot.seen.age;
        for (ScoreSource s : slot.seen.source) {
          cr.score_source.push_back(ScoreSourceName(s));
        }
      }
      if (i < outcome_.costs.size()) cr.cost = outcome_.costs[i];
      cr.usage = slot.usage;
      record_.clients.push_back(std::move(cr));
    }
    deps_.selector->OnCommitted(candidates_, outcome_);
    ++committed_;
    if (deps_.evaluator != nullptr && (committed_ % options_.eval_every == 0 ||
                                       committed_ == options_.rounds)) {
      const absl::Time e0 = absl::Now();
      absl::StatusOr<EvalMetrics> eval = deps_.evaluator->Evaluate(global_);
      if (!eval.ok()) {
        fatal_ = eval.status();
        SetPhase(Phase::kIdle);
        return;
      }
      record_.evaluated = true;
      record_.eval = *eval;
      record_.phase_ms["eval"] = absl::ToDoubleMilliseconds(absl::Now() - e0);
    }
    if (deps_.store != nullptr) {
      const absl::Time c0 = absl::Now();
      Checkpoint ckpt;
      ckpt.round = committed_;
      ckpt.selection_state = deps_.selector->SaveState();
      ckpt.engine_state = SaveEngineState();
      ckpt.metrics_json = record_.ToJson();
      // Shares the values (copy on write): no second copy of the model.
      ckpt.weights = global_;
      absl::Status saved = deps_.store->Save(ckpt);
      if (!saved.ok()) {
        // The round is not durable: undo nothing in memory, but stop the run
        // so that no further round builds on an uncommitted one.
        fatal_ = absl::Status(saved.code(),
                              absl::StrCat("checkpoint of round ", committed_,
                                           " failed: ", saved.message()));
      }
      record_.phase_ms["checkpoint"] =
          absl::ToDoubleMilliseconds(absl::Now() - c0);
    }
    records_.push_back(record_);
    SetPhase(Phase::kIdle);
    attempt_ = 0;
    participant_aborts_ = 0;
    participant_fault_ = false;
    barred_.clear();
    suspected_.clear();
    slots_.clear();
  }

  // The noise multiplier of the update sums: the whole budget, less the clip
  // count's share with adaptive clipping (validated by the config).
  double UpdateMultiplier() const {
    const PrivacyOptions& p = options_.privacy;
    if (!p.adaptive) return p.noise_multiplier;
    absl::StatusOr<double> z =
        UpdateNoiseMultiplier(p.noise_multiplier, p.count_noise_std);
    return z.ok() ? *z : p.noise_multiplier;
  }

  // A key for this attempt's noise of kind `what`.
  NoiseKey NoiseKeyFor(const char* what) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (options_.privacy.noise_seed == 0) return RandomNoiseKey();
    return DerivedNoiseKey(
        options_.privacy.noise_seed,
        absl::StrCat(what, "|", running_round(), "|", attempt_));
  }

  // The multiplier a committed round is accounted with. In local mode each
  // client added noise for the layer's selected participants; with fewer
  // contributors the sum carries less, so the round counts with the least
  // noisy layer's effective multiplier.
  double RoundMultiplier(const AggregateStats& stats, bool scored) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const PrivacyOptions& p = options_.privacy;
    double z = p.noise_multiplier;
    if (!p.central) {
      for (size_t l = 0; l < global_.layers.size(); ++l) {
        if (stats.contributors[l] == 0) continue;
        auto n = layer_participants_.find(global_.layers[l].group);
        if (n == layer_participants_.end() || n->second <= 0) continue;
        z = std::min(z,
                     p.noise_multiplier *
                         std::sqrt(static_cast<double>(stats.contributors[l]) /
                                   n->second));
      }
    }
    return WithScores(z, scored);
  }

  // A round's multiplier when it also released scores on its sample.
  double WithScores(double z, bool scored) const {
    return scored ? JointNoiseMultiplier(
                        {z, options_.privacy.score_noise_multiplier})
                  : z;
  }

  void AccountCommitted(const AggregateStats& stats)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const PrivacyOptions& p = options_.privacy;
    const double z = RoundMultiplier(stats, scores_released_);
    ComposeRound(z);
    record_.private_round = true;
    record_.clip_norm = clip_norm_;
    record_.noise_multiplier = z;
    record_.delta = p.delta;
    record_.epsilon = accountant_.Epsilon(p.delta);
    if (!p.central) {
      record_.epsilon_coordinator = coordinator_accountant_.Epsilon(p.delta);
    }
    record_.insecure_sampling = p.insecure_sampling_seed != 0;
    if (p.adaptive && !stats.update_norms.empty()) {
      // Andrew et al. 2021: a noised count of the updates the clip left
      // whole (bits b - 1/2), then a geometric step toward the quantile.
      const double m = static_cast<double>(stats.update_norms.size());
      double centred = 0;
      for (double norm : stats.update_norms) {
        centred += (norm <= clip_norm_ ? 1.0 : 0.0) - 0.5;
      }
      GaussianSource noise(NoiseKeyFor("count"));
      centred += p.count_noise_std * noise.Next();
      const double fraction = centred / m + 0.5;
      clip_norm_ =
          NextClipNorm(clip_norm_, fraction, p.target_quantile, p.clip_lr);
    }
  }

  // One release of multiplier `z` on this attempt's sample: against the
  // released model amplified by the sampling rate; in local mode also
  // against the coordinator, which picked the sample and sees the noised
  // sum, without amplification.
  void ComposeRound(double z) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    accountant_.Compose(sample_rate_, z).IgnoreError();
    if (!options_.privacy.central) {
      coordinator_accountant_.Compose(1.0, z).IgnoreError();
    }
  }

  // Whether one more round (scoring or not) would spend more than the
  // target, against the released model or (local mode) the coordinator.
  bool ExceedsTargetEpsilon(bool score) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const PrivacyOptions& p = options_.privacy;
    const double z = WithScores(p.noise_multiplier, score);
    RdpAccountant next = accountant_;
    next.Compose(sample_rate_, z).IgnoreError();
    if (next.Epsilon(p.delta) > p.target_epsilon) return true;
    if (p.central) return false;
    RdpAccountant against_coordinator = coordinator_accountant_;
    against_coordinator.Compose(1.0, z).IgnoreError();
    return against_coordinator.Epsilon(p.delta) > p.target_epsilon;
  }

  const RoundEngineOptions options_;
  const Deps deps_;

  mutable absl::Mutex mu_;
  ModelWeights global_ ABSL_GUARDED_BY(mu_);
  int64_t committed_ ABSL_GUARDED_BY(mu_) = 0;
  bool resumed_ ABSL_GUARDED_BY(mu_) = false;
  // Set only by operations that also end the round's phase (SetPhase), so
  // that task_epoch() moves when the run ends this way too.
  absl::Status fatal_ ABSL_GUARDED_BY(mu_);
  Phase phase_ ABSL_GUARDED_BY(mu_) = Phase::kIdle;
  uint64_t task_epoch_ ABSL_GUARDED_BY(mu_) = 0;
  int attempt_ ABSL_GUARDED_BY(mu_) = 0;
  // Attempts of this round abandoned after a participant cheated (they do
  // not count against max_round_retries); whether the running one saw it.
  int participant_aborts_ ABSL_GUARDED_BY(mu_) = 0;
  bool participant_fault_ ABSL_GUARDED_BY(mu_) = false;
  // Clients implicated in an attempt a participant broke; not drawn for
  // this round's next attempts (BarSuspects), cleared at the commit.
  std::set<std::string> barred_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> suspected_ ABSL_GUARDED_BY(mu_);
  absl::Time phase_start_ ABSL_GUARDED_BY(mu_);
  absl::Time deadline_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, ClientInfo> joined_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Slot> slots_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::vector<double>> last_scores_ ABSL_GUARDED_BY(mu_);
  // importance.source train: every client's latest score per layer.
  ScoreBook book_ ABSL_GUARDED_BY(mu_);
  std::vector<SelectionCandidate> candidates_ ABSL_GUARDED_BY(mu_);
  SelectionOutcome outcome_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<LayerAggregator> aggregator_ ABSL_GUARDED_BY(mu_);
  RoundRecord record_ ABSL_GUARDED_BY(mu_);
  std::vector<RoundRecord> records_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int64_t> rejected_total_ ABSL_GUARDED_BY(mu_);
  // Secure aggregation of the running attempt (null when off): the server
  // half of the protocol and what the tasks hand out.
  std::unique_ptr<SecAggServer> secagg_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<const SecAggRoster> roster_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<const SecAggUnmaskRequest> unmask_ ABSL_GUARDED_BY(mu_);
  // Participants given each layer in the running round.
  std::map<std::string, int> layer_participants_ ABSL_GUARDED_BY(mu_);
  // Differential privacy: the current clip norm, the spent budget, the
  // running attempt's sample rate and whether it collected scores.
  double clip_norm_ ABSL_GUARDED_BY(mu_);
  RdpAccountant accountant_ ABSL_GUARDED_BY(mu_);
  bool privacy_spent_ ABSL_GUARDED_BY(mu_) = false;
  double sample_rate_ ABSL_GUARDED_BY(mu_) = 1.0;
  // Local mode: the same releases without amplification (ComposeRound).
  RdpAccountant coordinator_accountant_ ABSL_GUARDED_BY(mu_);
  bool scores_released_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace

std::string RoundRecord::ToJson() const {
  // ordered_json keeps the keys in the order written: timings come last so
  // that determinism checks can cut the line there.
  using Json = nlohmann::ordered_json;
  Json out;
  out["round"] = round;
  out["attempt"] = attempt;
  if (evaluated) {
    out["accuracy"] = eval.accuracy;  // NaN/Inf dump as null
    out["loss"] = eval.loss;
  }
  out["bytes_up"] = bytes_up;
  out["bytes_down"] = bytes_down;
  if (wire_bytes_up >= 0) out["wire_bytes_up"] = wire_bytes_up;
  out["changed_layers"] = changed_layers;
  out["selection"] = {{"objective", objective},
                      {"upper_bound", upper_bound},
                      {"gap", gap},
                      {"status", solver_status}};
  Json clients_json = Json::array();
  for (const ClientRoundRecord& c : clients) {
    Json client = {{"id", c.id},
                   {"budget", c.budget},
                   {"layers", c.layers},
                   {"contributed", c.contributed}};
    if (!c.scores.empty()) client["scores"] = c.scores;
    if (c.score_from >= 0) client["score_from"] = c.score_from;
    if (!c.score_age.empty()) {
      client["score_age"] = c.score_age;
      client["score_source"] = c.score_source;
    }
    if (c.cost >= 0) client["cost"] = c.cost;
    if (c.staleness >= 0) {
      client["staleness"] = c.staleness;
      client["layer_weights"] = c.layer_weights;
    }
    clients_json.push_back(std::move(client));
  }
  out["clients"] = std::move(clients_json);
  out["rejected"] = Json::object();
  for (const auto& [reason, count] : rejected) out["rejected"][reason] = count;
  if (secagg_roster > 0) {
    out["secure_aggregation"] = {{"roster", secagg_roster}};
  }
  if (private_round) {
    out["privacy"] = {{"epsilon", epsilon},
                      {"delta", delta},
                      {"clip_norm", clip_norm},
                      {"noise_multiplier", noise_multiplier}};
    if (epsilon_coordinator >= 0) {
      out["privacy"]["epsilon_coordinator"] = epsilon_coordinator;
    }
    out["privacy"]["sampling"] = insecure_sampling ? "insecure_seed" : "os";
  }
  Json timing = Json::object();
  for (const auto& [phase, ms] : phase_ms) timing[phase] = ms;
  timing["solve"] = solve_ms;
  out["timing_ms"] = std::move(timing);
  // Each client's measured usage, and measured / budget in a profiled unit.
  Json usage = Json::array();
  for (const ClientRoundRecord& c : clients) {
    const ClientUsage& u = c.usage;
    if (u.score_s < 0 && u.train_s < 0 && u.peak_bytes < 0 &&
        u.score_peak_bytes < 0 && u.process_peak_bytes < 0) {
      continue;
    }
    Json entry = {{"id", c.id}};
    if (u.score_s >= 0) entry["score_s"] = u.score_s;
    if (u.train_s >= 0) entry["train_s"] = u.train_s;
    if (u.peak_bytes >= 0) entry["peak_mb"] = Mib(u.peak_bytes);
    if (u.score_peak_bytes >= 0)
      entry["score_peak_mb"] = Mib(u.score_peak_bytes);
    if (u.process_peak_bytes >= 0) {
      entry["process_peak_mb"] = Mib(u.process_peak_bytes);
    }
    if (u.memory_limit_bytes >= 0) {
      entry["memory_limit_mb"] = Mib(u.memory_limit_bytes);
      if (u.process_peak_bytes >= 0 && u.memory_limit_bytes > 0) {
        entry["process_peak_over_limit"] =
            static_cast<double>(u.process_peak_bytes) / u.memory_limit_bytes;
      }
    }
    if (u.cpus >= 0) entry["cpus"] = u.cpus;
    const double measured = MeasuredInBudgetUnit(c, budget_unit);
    if (measured >= 0 && c.budget > 0) {
      entry["measured"] = measured;
      entry["measured_over_budget"] = measured / c.budget;
    }
    usage.push_back(std::move(entry));
  }
  out["usage"] = std::move(usage);
  // Replace, not throw, on a string that is not UTF-8 (a client id is checked
  // elsewhere; a log line must never take the run down).
  return out.dump(-1, ' ', false, Json::error_handler_t::replace);
}

double MeasuredInBudgetUnit(const ClientRoundRecord& c,
                            const std::string& budget_unit) {
  const ClientUsage& u = c.usage;
  if (budget_unit == "time" && u.train_s >= 0) {
    return u.train_s + std::max(0.0, u.score_s);
  }
  // The round's peak: training's, or the scoring pass's when higher.
  const int64_t peak = std::max(u.peak_bytes, u.score_peak_bytes);
  if (budget_unit == "memory" && peak >= 0) return Mib(peak);
  return -1;
}

std::string UsageReport(const std::vector<RoundRecord>& records) {
  struct PerClient {
    int rounds = 0;
    double budget = 0, sum = 0, worst = 0;
  };
  std::map<std::string, PerClient> clients;
  std::vector<double> ratios;
  std::string unit;
  for (const RoundRecord& r : records) {
    for (const ClientRoundRecord& c : r.clients) {
      const double m = MeasuredInBudgetUnit(c, r.budget_unit);
      if (m < 0 || !(c.budget > 0)) continue;
      unit = r.budget_unit;
      PerClient& p = clients[c.id];
      ++p.rounds;
      p.budget = c.budget;
      p.sum += m / c.budget;
      p.worst = std::max(p.worst, m / c.budget);
      ratios.push_back(m / c.budget);
    }
  }
  if (ratios.empty()) return "";
  std::sort(ratios.begin(), ratios.end());
  const auto at = [&](double q) {
    return ratios[std::min(ratios.size() - 1,
                           static_cast<size_t>(q * (ratios.size() - 1) + 0.5))];
  };
  std::string out = absl::StrFormat(
      "measured / budget (%s): %d client-rounds, median %.3f, p95 %.3f, max "
      "%.3f\n%-12s %6s %12s %10s %10s\n",
      unit, ratios.size(), at(0.5), at(0.95), ratios.back(), "client", "rounds",
      unit == "time" ? "budget_s" : "budget_mb", "mean", "max");
  for (const auto& [id, p] : clients) {
    absl::StrAppend(
        &out, absl::StrFormat("%-12s %6d %12.4f %10.3f %10.3f\n", id, p.rounds,
                              p.budget, p.sum / p.rounds, p.worst));
  }
  return out;
}

absl::Status RoundEngine::SubmitUpdateFrom(const std::string& client_id,
                                           int64_t round, int64_t num_samples,
                                           std::vector<LayerDelta> shapes,
                                           DeltaSource& values) {
  RETURN_IF_ERROR(ReadDeltaValues(values, shapes));
  return SubmitUpdate(client_id, round, num_samples, shapes);
}

absl::StatusOr<std::unique_ptr<RoundEngine>> RoundEngine::Create(
    const RoundEngineOptions& options, ModelWeights initial, Deps deps) {
  if (deps.clock == nullptr || deps.selector == nullptr) {
    return absl::InvalidArgumentError(
        "round engine: clock and selector are required");
  }
  if (initial.layers.empty()) {
    return absl::InvalidArgumentError("round engine: the model has no layers");
  }
  if (options.async.enabled) {
    return CreateAsyncRoundEngine(options, std::move(initial), deps);
  }
  auto engine =
      std::make_unique<RoundEngineImpl>(options, std::move(initial), deps);
  RETURN_IF_ERROR(engine->Resume());
  return std::unique_ptr<RoundEngine>(std::move(engine));
}

}  // namespace layerfl

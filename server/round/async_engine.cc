#include "server/round/async_engine.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <deque>
#include <filesystem>
#include <map>
#include <set>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "common/util/status_macros.h"
#include "server/checkpoint/journal.h"
#include "server/round/engine_util.h"
#include "server/selection/rng.h"

namespace layerfl {

double StalenessWeight(const AsyncOptions& o, int64_t t) {
  const double x = static_cast<double>(std::max<int64_t>(0, t));
  if (o.staleness == "polynomial") return std::pow(1.0 + x, -o.exponent);
  if (o.staleness == "hinge") {
    if (x <= o.hinge_b) return 1.0;
    return 1.0 / (o.hinge_a * (x - o.hinge_b) + 1.0);
  }
  return 1.0;  // constant
}

namespace {

// --- the records of the engine state and of the buffer journal ---
//
// Every change that shapes what the engine does next is one record: a task
// handed out ('A'), scores accepted ('S'), an update folded in ('U'), a task
// withdrawn ('F'); a checkpoint's engine state is the records that rebuild
// the state at the commit ('Q' draw count, 'H' layer versions at a commit,
// 'S', 'A'), and the journal starts with 'J' (the commit it follows).
// Little-endian; doubles and floats bit for bit.

class Writer {
 public:
  explicit Writer(char kind) { out_.push_back(kind); }
  Writer& I64(int64_t v) {
    for (int i = 0; i < 8; ++i) {
      out_.push_back(static_cast<char>(static_cast<uint64_t>(v) >> (8 * i)));
    }
    return *this;
  }
  Writer& F64(double v) {
    int64_t bits;
    std::memcpy(&bits, &v, 8);
    return I64(bits);
  }
  Writer& Str(const std::string& s) {
    I64(static_cast<int64_t>(s.size()));
    out_ += s;
    return *this;
  }
  Writer& Strs(const std::vector<std::string>& v) {
    I64(static_cast<int64_t>(v.size()));
    for (const std::string& s : v) Str(s);
    return *this;
  }
  Writer& F64s(const std::vector<double>& v) {
    I64(static_cast<int64_t>(v.size()));
    for (double d : v) F64(d);
    return *this;
  }
  Writer& I64s(const std::vector<int64_t>& v) {
    I64(static_cast<int64_t>(v.size()));
    for (int64_t d : v) I64(d);
    return *this;
  }
  Writer& F32s(const std::vector<float>& v) {
    I64(static_cast<int64_t>(v.size()));
    const size_t at = out_.size();
    out_.resize(at + v.size() * sizeof(float));
    if (!v.empty()) std::memcpy(&out_[at], v.data(), v.size() * sizeof(float));
    return *this;
  }
  const std::string& bytes() const { return out_; }

 private:
  std::string out_;
};

// Reads what Writer wrote; any short or absurd read makes ok() false.
class Reader {
 public:
  explicit Reader(const std::string& in) : in_(in) {}
  char Kind() { return Need(1) ? in_[at_++] : '\0'; }
  int64_t I64() {
    if (!Need(8)) return 0;
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) {
      v |= static_cast<uint64_t>(static_cast<unsigned char>(in_[at_ + i]))
           << (8 * i);
    }
    at_ += 8;
    return static_cast<int64_t>(v);
  }
  double F64() {
    const int64_t bits = I64();
    double v;
    std::memcpy(&v, &bits, 8);
    return v;
  }
  std::string Str() {
    const int64_t n = Count(1);
    if (!Need(n)) return "";
    std::string s = in_.substr(at_, n);
    at_ += n;
    return s;
  }
  std::vector<std::string> Strs() {
    std::vector<std::string> v(Count(8));
    for (std::string& s : v) s = Str();
    return v;
  }
  std::vector<double> F64s() {
    std::vector<double> v(Count(8));
    for (double& d : v) d = F64();
    return v;
  }
  std::vector<int64_t> I64s() {
    std::vector<int64_t> v(Count(8));
    for (int64_t& d : v) d = I64();
    return v;
  }
  std::vector<float> F32s() {
    const int64_t n = Count(sizeof(float));
    std::vector<float> v(n);
    if (n > 0 && Need(n * sizeof(float))) {
      std::memcpy(v.data(), &in_[at_], n * sizeof(float));
      at_ += n * sizeof(float);
    }
    return v;
  }
  bool ok() const { return ok_; }
  // The record was read whole, nothing left over.
  bool done() const { return ok_ && at_ == in_.size(); }

 private:
  bool Need(int64_t n) {
    if (!ok_ || n < 0 || static_cast<size_t>(n) > in_.size() - at_) ok_ = false;
    return ok_;
  }
  // A count of items of at least `item_bytes` each that the rest can hold.
  int64_t Count(int64_t item_bytes) {
    const int64_t n = I64();
    if (!ok_ || n < 0 ||
        static_cast<size_t>(n) > (in_.size() - at_) / item_bytes) {
      ok_ = false;
      return 0;
    }
    return n;
  }

  const std::string& in_;
  size_t at_ = 0;
  bool ok_ = true;
};

std::string EncodeUpdate(Writer& w, const std::vector<LayerDelta>& update) {
  w.I64(static_cast<int64_t>(update.size()));
  for (const LayerDelta& d : update) {
    w.Str(d.group).I64(static_cast<int64_t>(d.tensors.size()));
    for (const Tensor32& t : d.tensors) {
      w.Str(t.name).I64s(t.shape).F32s(t.values);
    }
  }
  return w.bytes();
}

std::vector<LayerDelta> DecodeUpdate(Reader& r) {
  std::vector<LayerDelta> update;
  const int64_t n = r.I64();
  for (int64_t i = 0; i < n && r.ok(); ++i) {
    LayerDelta d;
    d.group = r.Str();
    const int64_t tensors = r.I64();
    for (int64_t t = 0; t < tensors && r.ok(); ++t) {
      Tensor32 tensor;
      tensor.name = r.Str();
      tensor.shape = r.I64s();
      tensor.values = r.F32s();
      d.tensors.push_back(std::move(tensor));
    }
    update.push_back(std::move(d));
  }
  return update;
}

enum class SlotKind : char { kScore = 's', kTrain = 't' };

// A client holding a task.
struct Slot {
  SlotKind kind = SlotKind::kTrain;
  int64_t base = 0;  // the committed version when it was handed out
  std::vector<std::string> layers;
  int score_from = 0;
  double cost = -1;
  // What the commit's record and regulation statistics need of the client,
  // as it was when the task was handed out (a journal replayed before the
  // clients join again still has it).
  double budget = 0;
  int64_t num_samples = 0;
  absl::Time deadline;
  ClientUsage usage;
};

// An update in the buffer, for the commit's record. Its client (id, budget,
// sample count, the scores it was selected from) is `candidate`, as the
// regulation statistics get it.
struct Contribution {
  SelectionCandidate candidate;
  std::vector<std::string> layers;
  double cost = -1;
  int64_t staleness = 0;
  std::vector<double> weights;
  ClientUsage usage;
};

absl::Status Corrupt(const std::string& what) {
  return absl::DataLossError(absl::StrCat("async engine state: ", what));
}

class AsyncRoundEngine : public RoundEngine {
 public:
  AsyncRoundEngine(const RoundEngineOptions& options, ModelWeights initial,
                   Deps deps)
      : options_(options), deps_(deps), global_(std::move(initial)) {}

  absl::Status Resume() {
    absl::MutexLock lock(&mu_);
    NewBuffer();
    if (deps_.store == nullptr) {
      PushVersions();
      return absl::OkStatus();
    }
    ASSIGN_OR_RETURN(std::optional<Checkpoint> ckpt, deps_.store->LoadLatest());
    if (ckpt.has_value()) {
      RETURN_IF_ERROR(CheckSameStructure(global_, ckpt->weights, ckpt->round));
      RETURN_IF_ERROR(deps_.selector->RestoreState(ckpt->selection_state));
      global_ = std::move(ckpt->weights);
      committed_ = ckpt->round;
      resumed_ = true;
      const JournalContents state = ParseJournal(ckpt->engine_state);
      if (!IsAsyncEngineState(ckpt->engine_state)) {
        return absl::FailedPreconditionError(absl::StrCat(
            "the checkpoint of round ", ckpt->round,
            " was written by a synchronous run; federated.mode: async cannot "
            "continue it (start in a fresh federated.run_dir)"));
      }
      replaying_ = true;
      for (const std::string& record : state.records) {
        RETURN_IF_ERROR(Apply(record));
      }
      replaying_ = false;
    }
    if (history_.empty() || history_.back().first != committed_) {
      PushVersions();
    }
    const std::string path =
        (std::filesystem::path(deps_.store->dir()) / kAsyncJournalName)
            .string();
    ASSIGN_OR_RETURN(journal_, Journal::Open(path));
    ASSIGN_OR_RETURN(JournalContents journaled, journal_->Read());
    // A journal that follows another commit is the leftover of a buffer
    // that was committed after all (the crash came between the checkpoint
    // and the journal's reset): nothing of it is pending.
    bool current = false;
    if (!journaled.records.empty()) {
      Reader r(journaled.records[0]);
      current = r.Kind() == 'J' && r.I64() == committed_ && r.done();
    }
    if (current) {
      replaying_ = true;
      const int64_t before = committed_;
      for (size_t i = 1; i < journaled.records.size(); ++i) {
        absl::Status s = committed_ == before
                             ? Apply(journaled.records[i])
                             : Corrupt(
                                   "records after the update that "
                                   "filled the buffer");
        if (!s.ok()) {
          return absl::Status(
              s.code(), absl::StrCat(path, ": record ", i, ": ", s.message()));
        }
        resumed_ = true;
      }
      replaying_ = false;
    } else {
      RETURN_IF_ERROR(StartJournal());
    }
    return fatal_;
  }

  absl::Status Join(const ClientInfo& client) override {
    RETURN_IF_ERROR(ValidateJoin(client));
    absl::MutexLock lock(&mu_);
    joined_[client.id] = client;
    if (!slots_.count(client.id)) AddIdle(client.id);
    Fill();
    return absl::OkStatus();
  }

  void Leave(const std::string& client_id) override {
    absl::MutexLock lock(&mu_);
    joined_.erase(client_id);
    if (slots_.count(client_id)) Withdraw(client_id);
    RemoveIdle(client_id);
    Fill();
  }

  absl::Status StartRound() override {
    absl::MutexLock lock(&mu_);
    RETURN_IF_ERROR(fatal_);
    if (finished_locked()) {
      return absl::FailedPreconditionError("the run is finished");
    }
    if (started_) {
      return absl::FailedPreconditionError(
          "the asynchronous run is already running");
    }
    if (static_cast<int>(joined_.size()) < options_.min_clients) {
      return absl::FailedPreconditionError(absl::StrCat(
          "only ", joined_.size(), " clients joined, ", options_.min_clients,
          " needed (federated.min_clients)"));
    }
    started_ = true;
    buffer_start_ = deps_.clock->Now();
    // Tasks restored from a checkpoint or journal run from now.
    for (auto& [id, slot] : slots_) slot.deadline = Deadline();
    Bump();
    Fill();
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
    if (!started_ || it == slots_.end()) return task;
    const Slot& slot = it->second;
    // The version it fetches now is the one it trains from: the upload
    // names it as round - 1.
    task.round = committed_ + 1;
    task.deadline = slot.deadline;
    if (slot.kind == SlotKind::kScore) {
      task.kind = TaskKind::kScore;
      task.score_from = slot.score_from;
    } else {
      task.kind = TaskKind::kTrain;
      task.layers = slot.layers;
      task.layer_participants.assign(slot.layers.size(), 1);
    }
    return task;
  }

  absl::Status SubmitScores(const std::string& client_id, int64_t round,
                            const std::vector<double>& scores) override {
    absl::MutexLock lock(&mu_);
    Slot* slot = nullptr;
    RETURN_IF_ERROR(Admit(client_id, round, SlotKind::kScore, &slot));
    if (absl::Status bad = CheckScores(client_id, scores, global_); !bad.ok()) {
      CountRejection(bad);
      return bad;
    }
    Writer w('S');
    w.Str(client_id).I64(round - 1).F64s(scores);
    RETURN_IF_ERROR(Journaled(w.bytes()));
    RETURN_IF_ERROR(Apply(w.bytes()));
    AssignTraining(client_id);
    return fatal_;
  }

  absl::Status CheckUpload(const std::string& client_id,
                           int64_t round) override {
    absl::MutexLock lock(&mu_);
    Slot* slot = nullptr;
    return Admission(client_id, round, SlotKind::kTrain, &slot);
  }

  absl::Status SubmitUpdate(const std::string& client_id, int64_t round,
                            int64_t num_samples,
                            const std::vector<LayerDelta>& update) override {
    absl::MutexLock lock(&mu_);
    Slot* slot = nullptr;
    RETURN_IF_ERROR(Admit(client_id, round, SlotKind::kTrain, &slot));
    if (num_samples > kMaxSamples) {
      return Refuse(RejectReason::kBadSampleCount,
                    absl::StrCat("client '", client_id, "': num_samples ",
                                 num_samples, " is above 10^12"));
    }
    const int64_t staleness = committed_ - (round - 1);
    if (staleness > options_.async.max_staleness) {
      absl::Status refused = Rejection(
          RejectReason::kTooStale,
          absl::StrCat(
              "client '", client_id, "' trained from version ", round - 1, ", ",
              staleness, " commits behind the global model (",
              "federated.max_staleness = ", options_.async.max_staleness, ")"));
      // Counted through the journaled withdrawal, so that the commit's
      // record counts it after a restart too.
      Withdraw(client_id, "too_stale");
      Fill();
      return refused;
    }
    Writer w('U');
    w.Str(client_id).I64(round).I64(num_samples);
    const std::string record = EncodeUpdate(w, update);
    // Checked and folded first: a refused update is never journaled.
    RETURN_IF_ERROR(Fold(client_id, round, num_samples, update));
    if (absl::Status s = Journaled(record); !s.ok()) {
      // Folded but not durable: a later commit would hold an update a
      // crash could lose, so the run stops here.
      fatal_ = s;
      Bump();
      return s;
    }
    MaybeCommit();
    Fill();
    return fatal_;
  }

  absl::Status SubmitAdvert(const std::string& client_id, int64_t,
                            const SecAggAdvert&) override {
    return NotSecure(client_id);
  }
  absl::Status SubmitShares(const std::string& client_id, int64_t,
                            const std::vector<SecAggShare>&) override {
    return NotSecure(client_id);
  }
  absl::Status SubmitMasked(const std::string& client_id, int64_t,
                            const SecAggMaskedInput&) override {
    return NotSecure(client_id);
  }
  absl::Status SubmitUnmask(const std::string& client_id, int64_t,
                            const SecAggUnmaskResponse&) override {
    return NotSecure(client_id);
  }

  absl::Status ReportUsage(const std::string& client_id, int64_t round,
                           const ClientUsage& usage) override {
    RETURN_IF_ERROR(CheckUsage(client_id, usage));
    absl::MutexLock lock(&mu_);
    auto it = slots_.find(client_id);
    if (it == slots_.end() || round - 1 < it->second.base ||
        round - 1 > committed_) {
      return absl::FailedPreconditionError(
          absl::StrCat("client '", client_id, "': usage for round ", round,
                       ", which it holds no task of"));
    }
    MergeUsage(usage, it->second.usage);
    return absl::OkStatus();
  }

  absl::Status Tick() override {
    absl::MutexLock lock(&mu_);
    RETURN_IF_ERROR(fatal_);
    if (!started_ || finished_locked()) return absl::OkStatus();
    const absl::Time now = deps_.clock->Now();
    std::vector<std::string> late;
    for (const auto& [id, slot] : slots_) {
      if (now >= slot.deadline) late.push_back(id);
    }
    for (const std::string& id : late) Withdraw(id);
    if (!late.empty()) Fill();
    return fatal_;
  }

  int64_t committed_round() const override {
    absl::MutexLock lock(&mu_);
    return committed_;
  }
  bool round_running() const override {
    absl::MutexLock lock(&mu_);
    return started_ && !finished_locked() && fatal_.ok();
  }
  std::string phase() const override {
    absl::MutexLock lock(&mu_);
    return started_ && !finished_locked() ? "buffering" : "not running";
  }
  uint64_t task_epoch() const override {
    absl::MutexLock lock(&mu_);
    return task_epoch_;
  }
  TaskChanges TaskChangesSince(uint64_t since) const override {
    absl::MutexLock lock(&mu_);
    TaskChanges c;
    c.epoch = task_epoch_;
    if (since == task_epoch_) return c;
    if (since < broadcast_epoch_ || since < changes_floor_) {
      c.all = true;
      return c;
    }
    for (auto it = changes_.rbegin(); it != changes_.rend() && it->first > since;
         ++it) {
      c.clients.push_back(it->second);
    }
    return c;
  }
  bool finished() const override {
    absl::MutexLock lock(&mu_);
    return finished_locked();
  }
  double epsilon() const override { return 0.0; }
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
    return Versions();
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
  bool finished_locked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return committed_ >= options_.rounds;
  }
  absl::Time Deadline() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return deps_.clock->Now() + options_.round_deadline;
  }
  // The start, a commit, or the end: anyone's task may have changed.
  void Bump() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    broadcast_epoch_ = ++task_epoch_;
  }
  // `id`'s task was handed out, changed or withdrawn: only its own.
  void Bump(const std::string& id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    changes_.emplace_back(++task_epoch_, id);
    if (changes_.size() > kMaxTaskChanges) {
      changes_floor_ = changes_.front().first;
      changes_.pop_front();
    }
  }

  std::vector<int64_t> Versions() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::vector<int64_t> v;
    for (const LayerWeights& l : global_.layers) v.push_back(l.version);
    return v;
  }
  // Remembers the layer versions of commit committed_; only the last
  // max_staleness + 1 are ever asked for.
  void PushVersions() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    history_.emplace_back(committed_, Versions());
    while (static_cast<int64_t>(history_.size()) >
           options_.async.max_staleness + 1) {
      history_.pop_front();
    }
  }
  const std::vector<int64_t>* VersionsAt(int64_t commit) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (const auto& [c, v] : history_) {
      if (c == commit) return &v;
    }
    return nullptr;
  }

  void NewBuffer() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    aggregator_ =
        std::make_unique<LayerAggregator>(global_, options_.aggregation);
    buffer_.clear();
    record_ = RoundRecord();
    record_.budget_unit = options_.budget_unit;
    record_.solver_status = "async";
  }

  absl::Status Refuse(RejectReason reason, std::string detail)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    absl::Status s = Rejection(reason, std::move(detail));
    CountRejection(s);
    return s;
  }
  void CountRejection(const absl::Status& s)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const std::string name = RefusalName(s);
    ++record_.rejected[name];
    ++rejected_total_[name];
  }
  absl::Status NotSecure(const std::string& client_id) {
    absl::MutexLock lock(&mu_);
    return Refuse(RejectReason::kProtocol,
                  absl::StrCat("client '", client_id,
                               "' sent a secure-aggregation message; this "
                               "run aggregates asynchronously"));
  }

  // A result from a client holding a task of `kind` whose round names a
  // version it can have fetched since the task was handed out.
  absl::Status Admission(const std::string& client_id, int64_t round, SlotKind kind,
                     Slot** slot) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const char* what = kind == SlotKind::kScore ? "scores" : "an update";
    if (!joined_.count(client_id)) {
      return Rejection(RejectReason::kUnknownClient,
                    absl::StrCat("client '", client_id, "' has not joined"));
    }
    if (finished_locked()) {
      // Its task was cleared when the last commit ended the run.
      return Rejection(RejectReason::kStaleRound,
                    absl::StrCat("client '", client_id, "' sent ", what,
                                 " after the run finished at version ",
                                 committed_));
    }
    auto it = slots_.find(client_id);
    if (!started_ || it == slots_.end()) {
      return Rejection(RejectReason::kNotAssigned,
                    absl::StrCat("client '", client_id, "' sent ", what,
                                 " but holds no task"));
    }
    if (it->second.kind != kind) {
      return Rejection(
          RejectReason::kNotAssigned,
          absl::StrCat(
              "client '", client_id, "' sent ", what, " but its task is to ",
              it->second.kind == SlotKind::kScore ? "score" : "train"));
    }
    if (round - 1 < it->second.base || round - 1 > committed_) {
      return Rejection(
          RejectReason::kStaleRound,
          absl::StrCat("client '", client_id, "' sent ", what, " for round ",
                       round, ": its task was handed out at version ",
                       it->second.base, " and the global model is at ",
                       committed_));
    }
    *slot = &it->second;
    return absl::OkStatus();
  }

  // Admission, counted when refused.
  absl::Status Admit(const std::string& client_id, int64_t round, SlotKind kind,
                     Slot** slot) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    absl::Status s = Admission(client_id, round, kind, slot);
    if (!s.ok()) CountRejection(s);
    return s;
  }

  // Folds a checked update into the buffer (no journaling, no commit).
  absl::Status Fold(const std::string& client_id, int64_t round,
                    int64_t num_samples, const std::vector<LayerDelta>& update)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Slot& slot = slots_[client_id];
    const int64_t base = round - 1;
    const std::vector<int64_t>* then = VersionsAt(base);
    if (then == nullptr) {
      return absl::InternalError(
          absl::StrCat("no layer versions kept for version ", base, " (commit ",
                       committed_, ")"));
    }
    const std::vector<int64_t> now = Versions();
    std::vector<double> weights;
    for (const LayerDelta& d : update) {
      const int l = global_.Find(d.group);
      weights.push_back(
          l < 0 ? 1.0
                : StalenessWeight(options_.async,
                                  now[l] - (*then)[static_cast<size_t>(l)]));
    }
    // The aggregator refuses a second update of one id per buffer; a fast
    // client may well send two, so each update is keyed by its place.
    const std::string key =
        absl::StrCat(client_id, "#", buffer_.size(), "#", committed_);
    absl::Status added =
        aggregator_->AddScaled(key, num_samples, update, slot.layers, weights);
    if (!added.ok()) {
      CountRejection(added);
      return added;
    }
    Contribution c;
    c.layers = slot.layers;
    c.cost = slot.cost;
    c.staleness = committed_ - base;
    c.weights = std::move(weights);
    c.usage = slot.usage;
    c.candidate = Candidate(client_id);
    c.candidate.budget = slot.budget;
    c.candidate.num_samples = slot.num_samples;
    buffer_.push_back(std::move(c));
    for (const LayerDelta& d : update) {
      for (const Tensor32& t : d.tensors) {
        record_.bytes_up += t.numel() * static_cast<int64_t>(sizeof(float));
      }
    }
    EraseSlot(client_id);
    Bump(client_id);
    return absl::OkStatus();
  }

  // Commits a full buffer.
  void MaybeCommit() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (static_cast<int>(buffer_.size()) >= options_.async.buffer_size) {
      Commit();
    }
  }

  // Frees `id`'s place (journaled), counting `refusal` (a RejectReasonName)
  // when it was refused.
  void Withdraw(const std::string& id, const std::string& refusal = "")
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Writer w('F');
    w.Str(id).Str(refusal);
    if (absl::Status s = Journaled(w.bytes()); !s.ok()) {
      fatal_ = s;
      Bump();
    }
    (void)Apply(w.bytes());
  }

  // Hands the free places to idle joined clients, one draw each.
  void Fill() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!started_ || replaying_ || finished_locked() || !fatal_.ok()) return;
    const size_t places = options_.clients_per_round > 0
                              ? static_cast<size_t>(options_.clients_per_round)
                              : joined_.size();
    if (slots_.size() >= places) return;
    // A draw picks among the idle joined clients in id order (idle_, kept
    // as places are handed and freed: listing them for every draw made each
    // update cost O(joined clients)). A client Assign made no place for
    // (only if its task record is refused) is not drawn again in this call.
    std::vector<std::string> skipped;
    while (slots_.size() < places && !idle_.empty()) {
      DeterministicRng rng(options_.seed ^ MixSeed(0xa5f1 + draws_));
      const std::string id = idle_[rng.UniformBelow(idle_.size())];
      ++draws_;
      Assign(id);
      if (!fatal_.ok()) break;
      if (!slots_.count(id)) {
        RemoveIdle(id);
        skipped.push_back(id);
      }
    }
    for (const std::string& id : skipped) AddIdle(id);
  }

  // slots_ and idle_ change together: idle_ = joined clients without a slot.
  void SetSlot(const std::string& id, Slot slot)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    slots_[id] = std::move(slot);
    RemoveIdle(id);
  }
  void EraseSlot(const std::string& id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    slots_.erase(id);
    if (joined_.count(id)) AddIdle(id);
  }
  void AddIdle(const std::string& id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const auto at = std::lower_bound(idle_.begin(), idle_.end(), id);
    if (at == idle_.end() || *at != id) idle_.insert(at, id);
  }
  void RemoveIdle(const std::string& id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const auto at = std::lower_bound(idle_.begin(), idle_.end(), id);
    if (at != idle_.end() && *at == id) idle_.erase(at);
  }

  bool NeedsScores(const std::string& id) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!deps_.selector->NeedsScores()) return false;
    auto at = scored_at_.find(id);
    return at == scored_at_.end() ||
           committed_ - at->second >= options_.selection_period;
  }

  SelectionCandidate Candidate(const std::string& id) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    SelectionCandidate c;
    c.id = id;
    auto info = joined_.find(id);
    if (info != joined_.end()) {
      c.num_samples = info->second.num_samples;
      c.budget = info->second.budget;
      c.profile = info->second.profile;
      c.speed = info->second.speed;
      c.max_time_s = info->second.max_time_s;
      c.max_memory_mb = info->second.max_memory_mb;
    }
    auto scores = last_scores_.find(id);
    if (scores != last_scores_.end()) c.scores = scores->second;
    auto at = scored_at_.find(id);
    c.scored = at != scored_at_.end() && at->second == committed_;
    return c;
  }

  void Assign(const std::string& id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (NeedsScores(id)) {
      Slot slot;
      slot.kind = SlotKind::kScore;
      slot.base = committed_;
      slot.score_from = ScoreFrom(joined_[id], options_.budget_unit,
                                  static_cast<int>(global_.layers.size()));
      Hand(id, slot);
      return;
    }
    AssignTraining(id);
  }

  // Selects `id`'s layers from its last scores and hands it a training task.
  void AssignTraining(const std::string& id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::vector<SelectionCandidate> candidates = {Candidate(id)};
    for (const auto& [other, held] : slots_) {
      if (static_cast<int>(candidates.size()) > options_.async.cohort) break;
      if (other == id || held.kind != SlotKind::kTrain ||
          !joined_.count(other) ||
          (deps_.selector->NeedsScores() && !last_scores_.count(other))) {
        continue;
      }
      candidates.push_back(Candidate(other));
    }
    absl::StatusOr<SelectionOutcome> outcome =
        deps_.selector->Select(candidates, committed_ + 1);
    if (!outcome.ok()) {
      fatal_ = absl::Status(
          outcome.status().code(),
          absl::StrCat("selection for client '", id, "' at version ",
                       committed_, " failed: ", outcome.status().message()));
      Bump();
      return;
    }
    Slot slot;
    slot.kind = SlotKind::kTrain;
    slot.base = committed_;
    slot.layers = outcome->layers.at(0);
    if (!outcome->costs.empty()) slot.cost = outcome->costs[0];
    Hand(id, slot);
  }

  // Journals and applies a task handed to `id` (a joined client).
  void Hand(const std::string& id, Slot slot)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const ClientInfo& info = joined_[id];
    slot.budget = info.budget;
    slot.num_samples = info.num_samples;
    const std::string record = TaskRecord(id, slot);
    if (absl::Status s = Journaled(record); !s.ok()) {
      fatal_ = s;
      Bump();
      return;
    }
    (void)Apply(record);
  }

  std::string TaskRecord(const std::string& id, const Slot& slot) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Writer w('A');
    w.Str(id)
        .I64(static_cast<int64_t>(slot.kind))
        .I64(slot.base)
        .I64(slot.score_from)
        .F64(slot.cost)
        .F64(slot.budget)
        .I64(slot.num_samples)
        .Strs(slot.layers)
        .I64(draws_);
    return w.bytes();
  }

  // Applies one record of the engine state or the journal.
  absl::Status Apply(const std::string& record)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Reader r(record);
    const char kind = r.Kind();
    switch (kind) {
      case 'A': {
        const std::string id = r.Str();
        Slot slot;
        slot.kind = static_cast<SlotKind>(r.I64());
        slot.base = r.I64();
        slot.score_from = static_cast<int>(r.I64());
        slot.cost = r.F64();
        slot.budget = r.F64();
        slot.num_samples = r.I64();
        slot.layers = r.Strs();
        const int64_t draws = r.I64();
        if (!r.done() ||
            (slot.kind != SlotKind::kScore && slot.kind != SlotKind::kTrain)) {
          return Corrupt("a malformed task record");
        }
        for (const std::string& g : slot.layers) {
          if (global_.Find(g) < 0) {
            return Corrupt(absl::StrCat("a task of unknown layer '", g, "'"));
          }
        }
        slot.deadline = Deadline();
        draws_ = draws;
        SetSlot(id, std::move(slot));
        Bump(id);
        return absl::OkStatus();
      }
      case 'S': {
        const std::string id = r.Str();
        const int64_t at = r.I64();
        std::vector<double> scores = r.F64s();
        if (!r.done() || scores.size() != global_.layers.size()) {
          return Corrupt("a malformed scores record");
        }
        last_scores_[id] = std::move(scores);
        scored_at_[id] = at;
        return absl::OkStatus();
      }
      case 'F': {
        const std::string id = r.Str();
        const std::string refusal = r.Str();
        if (!r.done()) return Corrupt("a malformed withdrawal record");
        if (!refusal.empty()) {
          ++record_.rejected[refusal];
          ++rejected_total_[refusal];
        }
        EraseSlot(id);
        Bump(id);
        return absl::OkStatus();
      }
      case 'Q': {
        draws_ = r.I64();
        if (!r.done()) return Corrupt("a malformed draw count");
        return absl::OkStatus();
      }
      case 'H': {
        const int64_t commit = r.I64();
        std::vector<int64_t> versions = r.I64s();
        if (!r.done() || versions.size() != global_.layers.size()) {
          return Corrupt("malformed layer versions");
        }
        history_.emplace_back(commit, std::move(versions));
        return absl::OkStatus();
      }
      case 'U': {
        const std::string id = r.Str();
        const int64_t round = r.I64();
        const int64_t num_samples = r.I64();
        std::vector<LayerDelta> update = DecodeUpdate(r);
        if (!r.done()) return Corrupt("a malformed update record");
        if (!slots_.count(id) || slots_[id].kind != SlotKind::kTrain) {
          return Corrupt(absl::StrCat("an update of '", id,
                                      "', which holds no training task"));
        }
        RETURN_IF_ERROR(Fold(id, round, num_samples, update));
        MaybeCommit();
        return fatal_;
      }
      default:
        return Corrupt(
            absl::StrCat("a record of unknown kind ", static_cast<int>(kind)));
    }
  }

  // Appends `record` to the journal (not while replaying it).
  absl::Status Journaled(const std::string& record)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (journal_ == nullptr || replaying_) return absl::OkStatus();
    return journal_->Append(record);
  }

  absl::Status StartJournal() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (journal_ == nullptr) return absl::OkStatus();
    RETURN_IF_ERROR(journal_->Reset());
    Writer w('J');
    w.I64(committed_);
    return journal_->Append(w.bytes());
  }

  // The records that rebuild the engine at this commit.
  std::string SaveEngineState() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::string out;
    Writer q('Q');
    q.I64(draws_);
    out += FrameRecord(q.bytes());
    for (const auto& [commit, versions] : history_) {
      Writer h('H');
      h.I64(commit).I64s(versions);
      out += FrameRecord(h.bytes());
    }
    for (const auto& [id, scores] : last_scores_) {
      Writer s('S');
      s.Str(id).I64(scored_at_.at(id)).F64s(scores);
      out += FrameRecord(s.bytes());
    }
    for (const auto& [id, slot] : slots_) {
      out += FrameRecord(TaskRecord(id, slot));
    }
    return out;
  }

  void Commit() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const absl::Time t0 = deps_.clock->Now();
    record_.phase_ms["buffer"] = absl::ToDoubleMilliseconds(t0 - buffer_start_);
    const absl::Time w0 = absl::Now();
    absl::StatusOr<AggregateStats> stats = aggregator_->Commit(global_);
    if (!stats.ok()) {
      fatal_ = stats.status();
      Bump();
      return;
    }
    ++committed_;
    record_.round = committed_;
    record_.changed_layers = stats->changed_layers;
    record_.phase_ms["aggregate"] =
        absl::ToDoubleMilliseconds(absl::Now() - w0);
    PushVersions();
    std::vector<SelectionCandidate> candidates;
    SelectionOutcome outcome;
    for (Contribution& c : buffer_) {
      ClientRoundRecord cr;
      cr.id = c.candidate.id;
      cr.budget = c.candidate.budget;
      cr.layers = c.layers;
      cr.contributed = true;
      cr.scores = c.candidate.scores;
      cr.cost = c.cost;
      cr.usage = c.usage;
      cr.staleness = c.staleness;
      cr.layer_weights = c.weights;
      record_.clients.push_back(std::move(cr));
      candidates.push_back(c.candidate);
      outcome.layers.push_back(c.layers);
    }
    outcome.solver_status = "async";
    deps_.selector->OnCommitted(candidates, outcome);
    if (deps_.evaluator != nullptr && (committed_ % options_.eval_every == 0 ||
                                       committed_ == options_.rounds)) {
      const absl::Time e0 = absl::Now();
      absl::StatusOr<EvalMetrics> eval = deps_.evaluator->Evaluate(global_);
      if (!eval.ok()) {
        fatal_ = eval.status();
        Bump();
        return;
      }
      record_.evaluated = true;
      record_.eval = *eval;
      record_.phase_ms["eval"] = absl::ToDoubleMilliseconds(absl::Now() - e0);
    }
    if (finished_locked()) {  // nothing more is asked of them
      slots_.clear();
      idle_.clear();
      for (const auto& [id, info] : joined_) idle_.push_back(id);
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
      if (saved.ok()) saved = StartJournal();
      if (!saved.ok()) {
        fatal_ = absl::Status(saved.code(),
                              absl::StrCat("checkpoint of round ", committed_,
                                           " failed: ", saved.message()));
      }
      record_.phase_ms["checkpoint"] =
          absl::ToDoubleMilliseconds(absl::Now() - c0);
    }
    records_.push_back(record_);
    NewBuffer();
    buffer_start_ = t0;
    Bump();
  }

  const RoundEngineOptions options_;
  const Deps deps_;

  mutable absl::Mutex mu_;
  ModelWeights global_ ABSL_GUARDED_BY(mu_);
  int64_t committed_ ABSL_GUARDED_BY(mu_) = 0;
  bool resumed_ ABSL_GUARDED_BY(mu_) = false;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  // Applying stored records: nothing is journaled or handed out anew.
  bool replaying_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status fatal_ ABSL_GUARDED_BY(mu_);
  uint64_t task_epoch_ ABSL_GUARDED_BY(mu_) = 0;
  // The last epoch that changed anyone's task, and the targeted changes
  // since (epoch, client), the newest kMaxTaskChanges of them; asking from
  // before changes_floor_ gets "everyone's".
  static constexpr size_t kMaxTaskChanges = 4096;
  uint64_t broadcast_epoch_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t changes_floor_ ABSL_GUARDED_BY(mu_) = 0;
  std::deque<std::pair<uint64_t, std::string>> changes_ ABSL_GUARDED_BY(mu_);
  int64_t draws_ ABSL_GUARDED_BY(mu_) = 0;  // places handed out so far
  absl::Time buffer_start_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, ClientInfo> joined_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Slot> slots_ ABSL_GUARDED_BY(mu_);
  // The joined clients without a slot, in id order (Fill draws from it).
  std::vector<std::string> idle_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::vector<double>> last_scores_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int64_t> scored_at_ ABSL_GUARDED_BY(mu_);
  // (commit, layer versions) of the last max_staleness + 1 commits.
  std::deque<std::pair<int64_t, std::vector<int64_t>>> history_
      ABSL_GUARDED_BY(mu_);
  std::unique_ptr<LayerAggregator> aggregator_ ABSL_GUARDED_BY(mu_);
  std::vector<Contribution> buffer_ ABSL_GUARDED_BY(mu_);
  RoundRecord record_ ABSL_GUARDED_BY(mu_);
  std::vector<RoundRecord> records_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int64_t> rejected_total_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<Journal> journal_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

bool IsAsyncEngineState(const std::string& bytes) {
  const JournalContents records = ParseJournal(bytes);
  return records.dropped_tail_bytes == 0 && !records.records.empty() &&
         !records.records[0].empty() && records.records[0][0] == 'Q';
}

absl::StatusOr<std::unique_ptr<RoundEngine>> CreateAsyncRoundEngine(
    const RoundEngineOptions& options, ModelWeights initial,
    RoundEngine::Deps deps) {
  if (options.privacy.enabled || options.secagg.enabled) {
    return absl::InvalidArgumentError(
        "round engine: asynchronous aggregation runs without differential "
        "privacy and secure aggregation");
  }
  if (options.async.buffer_size < 1 || options.async.max_staleness < 0) {
    return absl::InvalidArgumentError(
        "round engine: async buffer_size must be >= 1 and max_staleness >= 0");
  }
  auto engine =
      std::make_unique<AsyncRoundEngine>(options, std::move(initial), deps);
  RETURN_IF_ERROR(engine->Resume());
  return std::unique_ptr<RoundEngine>(std::move(engine));
}

}  // namespace layerfl

#include "server/experiments/runner.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/trainer/pretrain.h"
#include "common/trainer/trainer.h"
#include "common/data/federated_data.h"
#include "common/data/file.h"
#include "common/model/model.h"
#include "common/util/status_macros.h"
#include "server/experiments/report.h"
#include "server/sim/simulator.h"

extern char** environ;

namespace layerfl {
namespace {

namespace fs = std::filesystem;

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string Duration(double seconds) {
  const int s = static_cast<int>(seconds + 0.5);
  if (s < 60) return absl::StrFormat("%ds", s);
  if (s < 3600) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  return absl::StrFormat("%dh%02dm", s / 3600, (s % 3600) / 60);
}

std::string CellName(const ExperimentCell& cell) {
  return absl::StrCat(cell.partition, "/", cell.budget, "/", cell.strategy,
                      "/seed", cell.seed);
}

std::string MetricsPath(const ExperimentCell& cell) {
  return (fs::path(cell.config.federated.run_dir) / "metrics.jsonl").string();
}

std::string LogPath(const ExperimentCell& cell) {
  return (fs::path(cell.config.federated.run_dir) / "log.txt").string();
}

bool Finished(const ExperimentCell& cell) {
  return LastRecordedRound(MetricsPath(cell)) == cell.config.federated.rounds;
}

// A run killed while writing a metrics line leaves a partial last line; the
// simulator appends after it on resume, so cut it off first.
absl::Status DropPartialLastLine(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return absl::OkStatus();
  std::ifstream in(path, std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(in)),
                   std::istreambuf_iterator<char>());
  if (text.empty() || text.back() == '\n') return absl::OkStatus();
  const size_t keep =
      text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n') + 1;
  fs::resize_file(path, keep, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("cannot truncate '", path, "': ", ec.message()));
  }
  return absl::OkStatus();
}

// Builds each missing pretrained checkpoint once, before any cell (workers
// running in parallel would otherwise all build it).
absl::Status WarmPretrainCaches(const std::vector<const ExperimentCell*>& todo,
                                std::ostream* progress) {
  std::set<std::string> done;
  for (const ExperimentCell* cell : todo) {
    const RunConfig& c = cell->config;
    if (c.model.kind != "vit" || !c.pretrain.enabled ||
        fs::exists(c.pretrain.checkpoint) ||
        !done.insert(c.pretrain.checkpoint).second) {
      continue;
    }
    if (progress) {
      *progress << "experiments: building the pretrained start "
                << c.pretrain.checkpoint << " (once; cached)\n";
    }
    SetTorchThreads(c.threads);
    TuneMallocForTraining();
    ASSIGN_OR_RETURN(FederatedImages images, BuildFederatedImages(c));
    RETURN_IF_ERROR(EnsurePretrained(c, images.holdout, progress).status());
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> LayerNames(const RunConfig& base) {
  ASSIGN_OR_RETURN(std::unique_ptr<Model> model,
                   CreateModel(base.model, base.seed));
  std::vector<std::string> names;
  for (const LayerGroup& g : model->groups()) names.push_back(g.name);
  return names;
}

// Runs argv with stdout/stderr appended to `log_path` (or inherited when
// empty); returns the child's pid.
absl::StatusOr<pid_t> Spawn(const std::vector<std::string>& argv,
                            const std::string& log_path) {
  std::vector<char*> args;
  for (const std::string& a : argv)
    args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (!log_path.empty()) {
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log_path.c_str(),
                                     O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  }
  pid_t pid = 0;
  const int rc =
      posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot start '", argv[0], "': ", std::strerror(rc)));
  }
  return pid;
}

// Waits for `pid`; its exit code, or 128 + signal.
int WaitFor(pid_t pid) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

std::string LastLine(const std::string& path) {
  std::ifstream in(path);
  std::string last;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) last = line;
  }
  return last;
}

// Plots, or why not.
bool Plot(const ExperimentOptions& options, const std::string& summary_path,
          const std::string& out_dir, std::string* why) {
  if (options.plot_script.empty()) {
    *why = "plots not requested";
    return false;
  }
  if (!fs::exists(options.python)) {
    *why = absl::StrCat("no plots: ", options.python,
                        " not found (install python3 and python3-matplotlib)");
    return false;
  }
  absl::StatusOr<pid_t> probe =
      Spawn({options.python, "-c", "import matplotlib"}, "/dev/null");
  if (!probe.ok() || WaitFor(*probe) != 0) {
    *why = absl::StrCat(
        "no plots: matplotlib is not installed for ", options.python,
        "; run `apt-get install -y python3-matplotlib` (make experiments does "
        "this), then rerun the same command to plot the finished grid");
    return false;
  }
  absl::StatusOr<pid_t> pid =
      Spawn({options.python, options.plot_script, summary_path, out_dir}, "");
  if (!pid.ok()) {
    *why = std::string(pid.status().message());
    return false;
  }
  const int rc = WaitFor(*pid);
  if (rc != 0) {
    *why = absl::StrCat("no plots: ", options.plot_script, " exited with ", rc);
    return false;
  }
  return true;
}

// Runs the pending cells, `jobs` worker processes at a time.
void RunInWorkers(
    const std::vector<const ExperimentCell*>& todo,
    const std::vector<size_t>& indices, const ExperimentOptions& options,
    const std::function<void(size_t, const std::string&, double)>& done) {
  std::map<pid_t, size_t> running;  // pid -> position in todo
  std::vector<Clock::time_point> started(todo.size());
  size_t next = 0;
  while (next < todo.size() || !running.empty()) {
    while (next < todo.size() &&
           static_cast<int>(running.size()) < options.jobs) {
      const ExperimentCell& cell = *todo[next];
      std::error_code ec;
      fs::create_directories(cell.config.federated.run_dir, ec);
      std::vector<std::string> argv = options.worker_argv;
      argv.push_back(absl::StrCat("--cell=", indices[next]));
      started[next] = Clock::now();
      absl::StatusOr<pid_t> pid = Spawn(argv, LogPath(cell));
      if (!pid.ok()) {
        done(next, std::string(pid.status().message()), 0.0);
      } else {
        running[*pid] = next;
      }
      ++next;
    }
    if (running.empty()) continue;
    int status = 0;
    const pid_t pid = waitpid(-1, &status, 0);
    if (pid < 0) {
      if (errno == EINTR) continue;
      for (const auto& [p, k] : running) {
        done(k, "lost track of the worker", SecondsSince(started[k]));
      }
      return;
    }
    auto it = running.find(pid);
    if (it == running.end()) continue;
    const size_t k = it->second;
    running.erase(it);
    const int rc =
        WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    done(k,
         rc == 0 ? std::string()
                 : absl::StrCat("worker exited with ", rc, ": ",
                                LastLine(LogPath(*todo[k])), " (see ",
                                LogPath(*todo[k]), ")"),
         SecondsSince(started[k]));
  }
}

// Held while a grid runs in `out_dir`, so that two runners never write the
// same cells. Released when the process exits, however it exits.
class OutDirLock {
 public:
  static absl::StatusOr<std::unique_ptr<OutDirLock>> Acquire(
      const std::string& out_dir) {
    const std::string path = (fs::path(out_dir) / ".lock").string();
    const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
      return absl::UnavailableError(
          absl::StrCat("cannot open '", path, "': ", std::strerror(errno)));
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
      close(fd);
      return absl::FailedPreconditionError(absl::StrCat(
          "another layerfl-experiments is running in '", out_dir,
          "' (it holds ", path, "); wait for it or use another --out"));
    }
    return std::unique_ptr<OutDirLock>(new OutDirLock(fd));
  }
  ~OutDirLock() { close(fd_); }

 private:
  explicit OutDirLock(int fd) : fd_(fd) {}
  const int fd_;
};

}  // namespace

std::string ExperimentOutDir(const ExperimentGrid& grid,
                             const ExperimentOptions& options) {
  if (!options.out_dir.empty()) return options.out_dir;
  if (!grid.out.empty()) return grid.out;
  return "runs/experiments";
}

absl::Status RunExperimentCell(const ExperimentCell& cell, std::ostream* echo) {
  const RunConfig& c = cell.config;
  std::error_code ec;
  fs::create_directories(c.federated.run_dir, ec);
  if (ec) {
    return absl::UnavailableError(absl::StrCat(
        "cannot create '", c.federated.run_dir, "': ", ec.message()));
  }
  const std::string metrics = MetricsPath(cell);
  RETURN_IF_ERROR(DropPartialLastLine(metrics));
  const int64_t recorded = LastRecordedRound(metrics);
  if (recorded > c.federated.rounds) {
    return absl::FailedPreconditionError(absl::StrCat(
        metrics, " already records round ", recorded, " but the grid runs ",
        c.federated.rounds, " rounds; remove ", c.federated.run_dir,
        " or use another --out"));
  }
  std::ofstream log(LogPath(cell), std::ios::app);
  SimOptions sim;
  sim.progress = echo != nullptr ? echo : &log;
  if (echo != nullptr) *echo << "--- " << CellName(cell) << "\n";
  absl::StatusOr<SimResult> result = RunSimulation(c, sim);
  if (!result.ok()) {
    log << "error: " << result.status().message() << "\n";
    return result.status();
  }
  if (LastRecordedRound(metrics) != c.federated.rounds) {
    // The checkpoint says the run is over but a metrics line is missing (a
    // crash between the commit and the metrics write).
    return absl::DataLossError(absl::StrCat(
        metrics, " ends at round ", LastRecordedRound(metrics),
        " but the run's checkpoint is at round ", result->rounds_committed,
        "; remove ", c.federated.run_dir, " to run this cell again"));
  }
  return absl::OkStatus();
}

absl::StatusOr<ExperimentOutcome> RunExperiments(
    const ExperimentGrid& grid, const ExperimentOptions& options) {
  const auto t0 = Clock::now();
  std::ostream* log = options.progress;
  ExperimentOutcome outcome;
  outcome.out_dir = ExperimentOutDir(grid, options);
  std::error_code ec;
  fs::create_directories(outcome.out_dir, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("cannot create '", outcome.out_dir, "': ", ec.message()));
  }
  std::unique_ptr<OutDirLock> lock;
  if (options.run) {
    ASSIGN_OR_RETURN(lock, OutDirLock::Acquire(outcome.out_dir));
  }
  ASSIGN_OR_RETURN(std::vector<ExperimentCell> cells,
                   ExpandGrid(grid, outcome.out_dir));
  outcome.cells_total = static_cast<int>(cells.size());

  if (options.run) {
    if (options.jobs < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("jobs: must be >= 1, got ", options.jobs));
    }
    if (options.jobs > 1 && options.worker_argv.empty()) {
      return absl::InvalidArgumentError(
          "jobs > 1 needs worker_argv (the command that runs one cell)");
    }
    std::vector<const ExperimentCell*> todo;
    std::vector<size_t> indices;
    for (size_t i = 0; i < cells.size(); ++i) {
      if (Finished(cells[i])) {
        ++outcome.cells_skipped;
      } else {
        todo.push_back(&cells[i]);
        indices.push_back(i);
      }
    }
    if (log) {
      *log << absl::StrFormat(
          "experiments: %d cells (%d already finished, %d to run), %d at a "
          "time, output in %s\n",
          outcome.cells_total, outcome.cells_skipped, todo.size(), options.jobs,
          outcome.out_dir);
    }
    RETURN_IF_ERROR(WarmPretrainCaches(todo, log));

    const auto run0 = Clock::now();
    int finished = 0;
    auto done = [&](size_t k, const std::string& error, double seconds) {
      const ExperimentCell& cell = *todo[k];
      ++finished;
      const double elapsed = SecondsSince(run0);
      const double eta = elapsed / finished * (todo.size() - finished);
      std::string what;
      if (error.empty()) {
        ++outcome.cells_run;
        absl::StatusOr<std::vector<RoundMetrics>> rounds =
            ReadMetricsFile(MetricsPath(cell));
        const CellSummary s =
            rounds.ok() ? SummarizeCell(*rounds) : CellSummary();
        what = absl::StrFormat("final %5.2f%%  best %5.2f%%  up %6.2f MB  %s",
                               100 * s.final_accuracy, 100 * s.best_accuracy,
                               s.bytes_up / 1e6, Duration(seconds));
      } else {
        outcome.failed.push_back(absl::StrCat(CellName(cell), ": ", error));
        what = absl::StrCat("FAILED: ", error);
      }
      if (log) {
        *log << absl::StrFormat("[%*d/%d] %-48s %s  | elapsed %s  ETA %s\n",
                                std::to_string(todo.size()).size(), finished,
                                todo.size(), CellName(cell), what,
                                Duration(elapsed), Duration(eta))
             << std::flush;
      }
    };
    if (options.jobs == 1) {
      for (size_t k = 0; k < todo.size(); ++k) {
        const auto cell0 = Clock::now();
        const absl::Status s =
            RunExperimentCell(*todo[k], options.round_progress);
        done(k, s.ok() ? std::string() : std::string(s.message()),
             SecondsSince(cell0));
      }
    } else {
      RunInWorkers(todo, indices, options, done);
    }
  }

  ASSIGN_OR_RETURN(std::vector<std::string> layers, LayerNames(grid.base));
  ASSIGN_OR_RETURN(ExperimentReport report,
                   BuildReport(grid, outcome.out_dir, layers));
  outcome.summary_path = (fs::path(outcome.out_dir) / "summary.json").string();
  outcome.results_path = (fs::path(outcome.out_dir) / "results.md").string();
  RETURN_IF_ERROR(
      WriteFileAtomically(outcome.summary_path, SummaryJson(report)));
  outcome.plotted =
      report.cells_done > 0 && Plot(options, outcome.summary_path,
                                    outcome.out_dir, &outcome.plot_message);
  if (report.cells_done == 0)
    outcome.plot_message = "no finished cells to plot";
  RETURN_IF_ERROR(WriteFileAtomically(
      outcome.results_path, ResultsMarkdown(report, outcome.plotted)));
  if (log) {
    if (!outcome.plotted)
      *log << "experiments: " << outcome.plot_message << "\n";
    *log << absl::StrFormat(
        "experiments: %d/%d cells finished (%d run now, %d skipped, %d "
        "failed) in %s; %s, %s%s\n",
        report.cells_done, outcome.cells_total, outcome.cells_run,
        outcome.cells_skipped, outcome.failed.size(),
        Duration(SecondsSince(t0)), outcome.results_path, outcome.summary_path,
        outcome.plotted ? ", plots" : "");
    for (const std::string& f : outcome.failed) {
      *log << "experiments: failed " << f << "\n";
    }
  }
  return outcome;
}

}  // namespace layerfl

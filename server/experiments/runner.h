#ifndef LAYERFL_SERVER_EXPERIMENTS_RUNNER_H_
#define LAYERFL_SERVER_EXPERIMENTS_RUNNER_H_

// Runs an experiment grid (grid.h) with the in-process simulator and writes
// the report (report.h) and plots into the output directory:
//
//   <out>/runs/<partition>/<budget>/<strategy>/seed<k>/
//       metrics.jsonl, checkpoints/, log.txt   one cell (layerfl-sim's files;
//                                              log.txt has its progress lines)
//   <out>/results.md, <out>/summary.json       report.h
//   <out>/acc_<partition>_<budget>.png         accuracy vs round, one line per
//                                              strategy (mean over seeds)
//   <out>/heatmap_<partition>_<budget>_<strategy>.png
//                                              layer x round, share of the
//                                              round's clients that selected
//                                              the layer (first seed)
//
// Every cell runs with federated.resume on: a cell whose metrics already reach
// federated.rounds is skipped, an interrupted one continues from its last
// checkpoint. So re-running the same command after a crash (or Ctrl-C)
// finishes the grid. A failing cell is reported and the others still run.
// A second runner on the same output directory is refused (<out>/.lock).
//
// Plots come from plot.py (python3 + matplotlib, which this code never
// installs); when matplotlib is missing the report says so and results.md and
// summary.json are written anyway.
//
// Blocking. One RunExperiments per process (the simulator sets LibTorch's
// global thread count).

#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/experiments/grid.h"

namespace layerfl {

struct ExperimentOptions {
  // Output directory; empty = the grid's `out`, or runs/experiments when the
  // grid has none.
  std::string out_dir;
  // Cells run at a time. 1 runs them in this process. N > 1 runs each cell in
  // its own process, `worker_argv` plus "--cell=<index>" (index into
  // ExpandGrid's order; see RunExperimentCell), with its output in the cell's
  // log.txt. Each process uses the base config's `threads`, so keep
  // jobs x threads <= cores.
  int jobs = 1;
  std::vector<std::string> worker_argv;
  // False: only rebuild the report and plots from the cells' files.
  bool run = true;
  // Plotting: `python` runs `plot_script` <summary.json> <out_dir>. An empty
  // plot_script skips plots.
  std::string python = "/usr/bin/python3";
  std::string plot_script;
  // One line per finished cell and a final summary; null = silent.
  std::ostream* progress = nullptr;
  // jobs == 1 only: also echo each round's progress line here (the demo does).
  std::ostream* round_progress = nullptr;
};

struct ExperimentOutcome {
  std::string out_dir;
  int cells_total = 0;
  int cells_run = 0;      // run (or continued) by this call and finished
  int cells_skipped = 0;  // already finished
  std::vector<std::string> failed;  // "<cell>: <error>"
  bool plotted = false;
  std::string plot_message;  // why there are no plots, when there are none
  std::string results_path;
  std::string summary_path;
};

// Runs the grid's unfinished cells, then writes the report and plots. Errors
// are about the whole grid (e.g. the output directory cannot be written);
// failing cells are listed in `failed` instead.
absl::StatusOr<ExperimentOutcome> RunExperiments(
    const ExperimentGrid& grid, const ExperimentOptions& options);

// Runs (or continues) one cell in this process, the simulator's progress
// lines appended to the cell's log.txt. What a worker process does.
// `echo`, when set, receives the simulator's per-round lines instead of the
// cell's log.txt.
absl::Status RunExperimentCell(const ExperimentCell& cell,
                               std::ostream* echo = nullptr);

// The output directory RunExperiments uses for these options.
std::string ExperimentOutDir(const ExperimentGrid& grid,
                             const ExperimentOptions& options);

}  // namespace layerfl

#endif  // LAYERFL_SERVER_EXPERIMENTS_RUNNER_H_

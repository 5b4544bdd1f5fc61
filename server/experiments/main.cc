// layerfl-experiments --grid FILE [--out DIR] [--jobs N]: runs an experiment
// grid and writes results.md, summary.json and plots (server/experiments/
// runner.h). Re-running the same command continues an interrupted grid.
#include <filesystem>
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "common/util/flags.h"
#include "server/experiments/grid.h"
#include "server/experiments/runner.h"

ABSL_FLAG(std::string, grid, "",
          "experiment grid (YAML), e.g. configs/experiments/paper.yaml");
ABSL_FLAG(std::string, out, "", "output directory (default: the grid's `out`)");
ABSL_FLAG(int, jobs, 1,
          "cells run at a time (> 1: one process per cell; keep jobs x threads "
          "<= cores)");
ABSL_FLAG(bool, report_only, false,
          "run nothing; rebuild results.md, summary.json and plots from the "
          "cells' files");
ABSL_FLAG(std::string, python, "/usr/bin/python3",
          "python3 with matplotlib, for the plots");
ABSL_FLAG(std::string, plot_script, LAYERFL_PLOT_SCRIPT,
          "plot script; empty = no plots");
ABSL_FLAG(bool, rounds, false,
          "with --jobs 1: print every round's progress line (make demo does)");
ABSL_FLAG(int, cell, -1,
          "internal: run only this cell (what --jobs workers do)");

int main(int argc, char** argv) {
  layerfl::ParseFlags(
      argc, argv,
      "layerfl-experiments --grid FILE [--out DIR] [--jobs N] [--report_only]");
  const std::string grid_path = absl::GetFlag(FLAGS_grid);
  if (grid_path.empty()) {
    std::cerr << "layerfl-experiments: --grid FILE is required\n";
    return 2;
  }
  absl::StatusOr<layerfl::ExperimentGrid> grid =
      layerfl::LoadExperimentGrid(grid_path);
  if (!grid.ok()) {
    std::cerr << "layerfl-experiments: " << grid.status().message() << "\n";
    return 2;
  }
  layerfl::ExperimentOptions options;
  options.out_dir = absl::GetFlag(FLAGS_out);
  options.jobs = absl::GetFlag(FLAGS_jobs);
  options.run = !absl::GetFlag(FLAGS_report_only);
  options.python = absl::GetFlag(FLAGS_python);
  options.plot_script = absl::GetFlag(FLAGS_plot_script);
  options.progress = &std::cout;
  if (absl::GetFlag(FLAGS_rounds)) options.round_progress = &std::cout;

  if (const int cell = absl::GetFlag(FLAGS_cell); cell >= 0) {
    absl::StatusOr<std::vector<layerfl::ExperimentCell>> cells =
        layerfl::ExpandGrid(*grid, layerfl::ExperimentOutDir(*grid, options));
    if (!cells.ok() || cell >= static_cast<int>(cells->size())) {
      std::cerr << "layerfl-experiments: no cell " << cell << "\n";
      return 2;
    }
    absl::Status s = layerfl::RunExperimentCell((*cells)[cell]);
    if (!s.ok()) std::cerr << "layerfl-experiments: " << s.message() << "\n";
    return s.ok() ? 0 : 1;
  }

  options.worker_argv = {
      std::filesystem::read_symlink("/proc/self/exe").string(),
      "--grid=" + grid_path,
      "--out=" + layerfl::ExperimentOutDir(*grid, options)};
  absl::StatusOr<layerfl::ExperimentOutcome> outcome =
      layerfl::RunExperiments(*grid, options);
  if (!outcome.ok()) {
    std::cerr << "layerfl-experiments: " << outcome.status().message() << "\n";
    return 1;
  }
  return outcome->failed.empty() ? 0 : 1;
}

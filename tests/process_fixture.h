#ifndef LAYERFL_TESTS_PROCESS_FIXTURE_H_
#define LAYERFL_TESTS_PROCESS_FIXTURE_H_

// Child processes for the multi-process tests (the real binaries on
// loopback): a Process runs argv with stdout+stderr in a log file and is
// SIGKILLed if still running when destroyed.

#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace layerfl {
namespace fixture {

// A child process with stdout+stderr in `log`.
class Process {
 public:
  Process(const std::vector<std::string>& argv, const std::string& log)
      : log_(log) {
    pid_ = fork();
    if (pid_ == 0) {
      FILE* out = std::fopen(log.c_str(), "w");
      if (out != nullptr) {
        dup2(fileno(out), 1);
        dup2(fileno(out), 2);
      }
      std::vector<char*> args;
      for (const std::string& a : argv)
        args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      execv(args[0], args.data());
      _exit(127);
    }
  }
  ~Process() {
    if (pid_ > 0 && !exited_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  // The exit code, or -1 when still running at `deadline` (then killed).
  int Wait(absl::Time deadline) {
    while (absl::Now() < deadline) {
      if (!Running()) return code_;
      absl::SleepFor(absl::Milliseconds(20));
    }
    return -1;
  }
  // Whether the process has not exited yet (it is reaped once it has).
  bool Running() {
    if (exited_) return false;
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) != pid_) return true;
    exited_ = true;
    code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return false;
  }
  void Signal(int sig) { kill(pid_, sig); }
  std::string Log() const {
    std::ifstream in(log_);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

 private:
  std::string log_;
  pid_t pid_ = -1;
  bool exited_ = false;
  int code_ = -1;
};

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace fixture
}  // namespace layerfl

#endif  // LAYERFL_TESTS_PROCESS_FIXTURE_H_

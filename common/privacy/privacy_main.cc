// layerfl-privacy: the RDP accountant on its own (common/privacy), as TF
// Privacy's compute_dp_sgd_privacy. Given the sampling rate, the noise
// multiplier and the number of compositions it prints epsilon at delta (last
// line "epsilon=<value>"); given a target epsilon instead of the noise
// multiplier it prints the smallest multiplier that meets it ("sigma=<value>").
// With --mode local (privacy.dp.mode: local) the noise protects against the
// coordinator, which picks the sample and sees every noised sum: it also
// prints "epsilon_coordinator=<value>", the same releases accounted without
// amplification by subsampling (q = 1), and a target must hold against both.
#include <algorithm>
#include <iostream>
#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/str_format.h"
#include "common/privacy/rdp_accountant.h"
#include "common/util/flags.h"

ABSL_FLAG(double, q, -1, "sampling rate per step, in [0, 1]; required");
ABSL_FLAG(double, sigma, -1, "noise multiplier (std / sensitivity), > 0");
ABSL_FLAG(int64_t, steps, -1, "number of compositions, >= 0; required");
ABSL_FLAG(double, delta, 1e-5, "delta, in (0, 1)");
ABSL_FLAG(double, target_epsilon, -1,
          "instead of --sigma: print the noise multiplier that reaches it");
ABSL_FLAG(std::string, mode, "central",
          "'central' (epsilon against the released model) or 'local' (also "
          "against the coordinator: no amplification by subsampling)");
ABSL_FLAG(std::string, conversion, "improved",
          "RDP to (epsilon, delta): 'improved' (Balle et al. 2020, TF "
          "Privacy and Opacus today) or 'classic' (Mironov 2017, the DP-SGD "
          "paper's moments accountant)");

int main(int argc, char** argv) {
  layerfl::ParseFlags(argc, argv,
                      "layerfl-privacy --q Q (--sigma S | --target_epsilon E) "
                      "--steps T [--delta D] [--mode central|local] "
                      "[--conversion improved|classic]");
  auto fail = [](const std::string& why) {
    std::cerr << "layerfl-privacy: " << why << "\n";
    return 2;
  };
  const double q = absl::GetFlag(FLAGS_q);
  const double sigma = absl::GetFlag(FLAGS_sigma);
  const double target = absl::GetFlag(FLAGS_target_epsilon);
  const int64_t steps = absl::GetFlag(FLAGS_steps);
  const double delta = absl::GetFlag(FLAGS_delta);
  const std::string conv = absl::GetFlag(FLAGS_conversion);
  const std::string mode = absl::GetFlag(FLAGS_mode);
  if (mode != "central" && mode != "local") {
    return fail("--mode: must be 'central' or 'local', got '" + mode + "'");
  }
  const bool local = mode == "local";
  if (!(q >= 0 && q <= 1)) return fail("--q: must be in [0, 1]");
  if (steps < 0) return fail("--steps: required, >= 0");
  if (!(delta > 0 && delta < 1)) return fail("--delta: must be in (0, 1)");
  if ((sigma > 0) == (target > 0)) {
    return fail("give exactly one of --sigma (> 0) and --target_epsilon (> 0)");
  }
  layerfl::RdpConversion conversion;
  if (conv == "improved") {
    conversion = layerfl::RdpConversion::kImproved;
  } else if (conv == "classic") {
    conversion = layerfl::RdpConversion::kClassic;
  } else {
    return fail("--conversion: must be 'improved' or 'classic', got '" + conv +
                "'");
  }
  if (sigma > 0) {
    layerfl::RdpAccountant accountant;
    absl::Status s = accountant.Compose(q, sigma, steps);
    if (!s.ok()) return fail(std::string(s.message()));
    std::cout << absl::StrFormat(
        "q=%g sigma=%g steps=%d delta=%g order=%g\n", q, sigma, steps, delta,
        accountant.BestOrder(delta, conversion));
    if (local) {
      layerfl::RdpAccountant coordinator;
      s = coordinator.Compose(1.0, sigma, steps);
      if (!s.ok()) return fail(std::string(s.message()));
      std::cout << absl::StrFormat("epsilon_coordinator=%.6g\n",
                                   coordinator.Epsilon(delta, conversion));
    }
    std::cout << absl::StrFormat("epsilon=%.6g\n",
                                 accountant.Epsilon(delta, conversion));
    return 0;
  }
  absl::StatusOr<double> z =
      layerfl::NoiseMultiplierFor(q, steps, delta, target, conversion);
  if (!z.ok()) return fail(std::string(z.status().message()));
  double sigma_needed = *z;
  if (local) {
    absl::StatusOr<double> z1 =
        layerfl::NoiseMultiplierFor(1.0, steps, delta, target, conversion);
    if (!z1.ok()) return fail(std::string(z1.status().message()));
    std::cout << absl::StrFormat("sigma_model=%.6g sigma_coordinator=%.6g\n",
                                 *z, *z1);
    sigma_needed = std::max(*z, *z1);
  }
  std::cout << absl::StrFormat(
      "q=%g steps=%d delta=%g target_epsilon=%g\nsigma=%.6g\n", q, steps,
      delta, target, sigma_needed);
  return 0;
}

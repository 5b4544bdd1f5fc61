#ifndef LAYERFL_COMMON_PRIVACY_RDP_ACCOUNTANT_H_
#define LAYERFL_COMMON_PRIVACY_RDP_ACCOUNTANT_H_

// Rényi-DP accounting of the subsampled Gaussian mechanism (Mironov 2017,
// "Rényi Differential Privacy"; Mironov, Talwar, Zhang 2019, "Rényi
// Differential Privacy of the Sampled Gaussian Mechanism"), the accountant of
// TF Privacy and Opacus. A mechanism that includes each record (here: each
// client) with probability q and adds Gaussian noise of std z * sensitivity
// has, at every order alpha > 1, an RDP bound computed exactly below (integer
// orders by the binomial expansion, fractional ones by the series of MTZ19
// §3.3); RDP composes by addition over rounds, and is converted to
// (epsilon, delta) at the best order.
//
// Torch-free, no global state; a const accountant may be shared.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace layerfl {

// RDP at `order` (> 1) of one application of the Gaussian mechanism with
// noise multiplier `z` (> 0) on a Poisson sample of rate `q` in [0, 1].
double SubsampledGaussianRdp(double q, double z, double order);

// How RDP becomes (epsilon, delta).
enum class RdpConversion {
  // epsilon = rdp + log(1/delta) / (alpha - 1) (Mironov 2017, Prop. 3); what
  // the DP-SGD paper's moments accountant and TF Privacy before 2020 report.
  kClassic,
  // epsilon = rdp + log1p(-1/alpha) - log(delta * alpha) / (alpha - 1)
  // (Balle et al. 2020; Canonne, Kamath, Steinke 2020): never larger, what
  // TF Privacy and Opacus report today. The default.
  kImproved,
};

class RdpAccountant {
 public:
  // The orders of TF Privacy's DP-SGD analysis: 1.1, 1.2, ..., 10.9, 12, 13,
  // ..., 63, and 128, 256, 512 for very small epsilons.
  static std::vector<double> DefaultOrders();

  RdpAccountant() : RdpAccountant(DefaultOrders()) {}
  explicit RdpAccountant(std::vector<double> orders);

  // Adds `steps` applications of the subsampled Gaussian mechanism.
  // InvalidArgument naming the argument when q is outside [0, 1], z <= 0 or
  // not finite, or steps < 0; nothing is added then.
  absl::Status Compose(double q, double z, int64_t steps = 1);

  // The smallest epsilon over the orders at `delta` in (0, 1); 0 before any
  // composition. Infinite when no order gives a finite bound.
  double Epsilon(double delta,
                 RdpConversion conversion = RdpConversion::kImproved) const;
  // The order that gives Epsilon(delta, conversion).
  double BestOrder(double delta,
                   RdpConversion conversion = RdpConversion::kImproved) const;

  const std::vector<double>& orders() const { return orders_; }
  const std::vector<double>& rdp() const { return rdp_; }

  // Exact one-line text form (orders and accumulated RDP, round-trips bit
  // for bit).
  std::string Serialize() const;
  // DataLoss naming what is malformed.
  static absl::StatusOr<RdpAccountant> Parse(const std::string& text);

 private:
  std::vector<double> orders_;
  std::vector<double> rdp_;
};

// The (epsilon, delta) of `steps` compositions, as RdpAccountant gives it.
absl::StatusOr<double> ComputeEpsilon(
    double q, double z, int64_t steps, double delta,
    RdpConversion conversion = RdpConversion::kImproved);

// The smallest noise multiplier (to 1e-6 relative) whose `steps`
// compositions at rate q stay within `target_epsilon` at `delta`.
// InvalidArgument naming the argument for values out of range; OutOfRange
// when even a noise multiplier of 10^4 does not reach it.
absl::StatusOr<double> NoiseMultiplierFor(
    double q, int64_t steps, double delta, double target_epsilon,
    RdpConversion conversion = RdpConversion::kImproved);

}  // namespace layerfl

#endif  // LAYERFL_COMMON_PRIVACY_RDP_ACCOUNTANT_H_

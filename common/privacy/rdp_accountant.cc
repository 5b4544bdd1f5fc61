#include "common/privacy/rdp_accountant.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace layerfl {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

double LogAdd(double a, double b) {
  if (a == -kInf) return b;
  if (b == -kInf) return a;
  const double hi = std::max(a, b);
  return hi + std::log1p(std::exp(std::min(a, b) - hi));
}

// log(exp(a) - exp(b)) for a >= b.
double LogSub(double a, double b) {
  if (b == -kInf) return a;
  if (a <= b) return -kInf;
  return a + std::log1p(-std::exp(b - a));
}

// log(erfc(x)), accurate where erfc underflows (asymptotic series).
double LogErfc(double x) {
  const double e = std::erfc(x);
  if (e > 1e-300) return std::log(e);
  const double r = 1.0 / (x * x);
  return -x * x - std::log(x) - 0.5 * std::log(M_PI) +
         std::log1p(-0.5 * r + 0.75 * r * r - 1.875 * r * r * r);
}

// log A_alpha for integer alpha (MTZ19 §3.2): the binomial expansion of
// E_{x~mu0}[((1-q) + q exp((2x-1)/(2z^2)))^alpha].
double LogAInt(double q, double z, int alpha) {
  double log_a = -kInf;
  for (int i = 0; i <= alpha; ++i) {
    const double log_binom = std::lgamma(alpha + 1.0) - std::lgamma(i + 1.0) -
                             std::lgamma(alpha - i + 1.0);
    const double log_coef = log_binom + i * std::log(q) +
                            (alpha - i) * std::log1p(-q);
    log_a = LogAdd(log_a, log_coef + (1.0 * i * i - i) / (2 * z * z));
  }
  return log_a;
}

// log A_alpha for fractional alpha (MTZ19 §3.3): two convergent series split
// at z0 = z^2 log(1/q - 1) + 1/2.
double LogAFrac(double q, double z, double alpha) {
  double log_a0 = -kInf, log_a1 = -kInf;
  const double z0 = z * z * std::log(1.0 / q - 1.0) + 0.5;
  double coef = 1.0;  // binom(alpha, i), built by its recurrence
  for (int i = 0; i < 100000; ++i) {
    if (i > 0) coef *= (alpha - i + 1) / i;
    if (coef == 0) break;
    const double log_coef = std::log(std::fabs(coef));
    const double j = alpha - i;
    const double log_t0 = log_coef + i * std::log(q) + j * std::log1p(-q);
    const double log_t1 = log_coef + j * std::log(q) + i * std::log1p(-q);
    const double log_e0 =
        std::log(0.5) + LogErfc((i - z0) / (std::sqrt(2.0) * z));
    const double log_e1 =
        std::log(0.5) + LogErfc((z0 - j) / (std::sqrt(2.0) * z));
    const double log_s0 = log_t0 + (1.0 * i * i - i) / (2 * z * z) + log_e0;
    const double log_s1 = log_t1 + (j * j - j) / (2 * z * z) + log_e1;
    if (coef > 0) {
      log_a0 = LogAdd(log_a0, log_s0);
      log_a1 = LogAdd(log_a1, log_s1);
    } else {
      log_a0 = LogSub(log_a0, log_s0);
      log_a1 = LogSub(log_a1, log_s1);
    }
    if (std::max(log_s0, log_s1) < -30) break;
  }
  return LogAdd(log_a0, log_a1);
}

double EpsilonAt(double order, double rdp, double delta,
                 RdpConversion conversion) {
  if (!std::isfinite(rdp)) return kInf;
  if (conversion == RdpConversion::kClassic) {
    return rdp - std::log(delta) / (order - 1);
  }
  // delta >= sqrt(1 - exp(-rdp)) bounds it through the KL divergence alone.
  if (delta * delta + std::expm1(-rdp) >= 0) return 0.0;
  if (order <= 1.01) return kInf;
  return rdp + std::log1p(-1.0 / order) -
         std::log(delta * order) / (order - 1);
}

}  // namespace

double SubsampledGaussianRdp(double q, double z, double order) {
  if (q == 0) return 0.0;
  if (q == 1.0) return order / (2 * z * z);
  if (std::isinf(order)) return kInf;
  const double log_a = (order == std::floor(order) && order < 1e6)
                           ? LogAInt(q, z, static_cast<int>(order))
                           : LogAFrac(q, z, order);
  return log_a / (order - 1);
}

std::vector<double> RdpAccountant::DefaultOrders() {
  std::vector<double> orders;
  for (int x = 1; x < 100; ++x) orders.push_back(1.0 + x / 10.0);
  for (int x = 12; x < 64; ++x) orders.push_back(x);
  for (double x : {128.0, 256.0, 512.0}) orders.push_back(x);
  return orders;
}

RdpAccountant::RdpAccountant(std::vector<double> orders)
    : orders_(std::move(orders)), rdp_(orders_.size(), 0.0) {}

absl::Status RdpAccountant::Compose(double q, double z, int64_t steps) {
  if (!(q >= 0 && q <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampling rate q must be in [0, 1], got ", q));
  }
  if (!(z > 0) || !std::isfinite(z)) {
    return absl::InvalidArgumentError(
        absl::StrCat("noise multiplier must be > 0 and finite, got ", z));
  }
  if (steps < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("steps must be >= 0, got ", steps));
  }
  for (size_t k = 0; k < orders_.size(); ++k) {
    rdp_[k] += steps * SubsampledGaussianRdp(q, z, orders_[k]);
  }
  return absl::OkStatus();
}

double RdpAccountant::Epsilon(double delta, RdpConversion conversion) const {
  double best = kInf;
  bool any = false;
  for (size_t k = 0; k < orders_.size(); ++k) {
    if (rdp_[k] != 0) any = true;
    best = std::min(best, EpsilonAt(orders_[k], rdp_[k], delta, conversion));
  }
  if (!any) return 0.0;
  return std::max(0.0, best);
}

double RdpAccountant::BestOrder(double delta, RdpConversion conversion) const {
  double best = kInf, order = orders_.empty() ? 0.0 : orders_[0];
  for (size_t k = 0; k < orders_.size(); ++k) {
    const double e = EpsilonAt(orders_[k], rdp_[k], delta, conversion);
    if (e < best) best = e, order = orders_[k];
  }
  return order;
}

std::string RdpAccountant::Serialize() const {
  std::string out = "rdp-v1";
  for (size_t k = 0; k < orders_.size(); ++k) {
    absl::StrAppend(&out, absl::StrFormat(" %a:%a", orders_[k], rdp_[k]));
  }
  return out;
}

absl::StatusOr<RdpAccountant> RdpAccountant::Parse(const std::string& text) {
  std::vector<std::string> parts = absl::StrSplit(text, ' ', absl::SkipEmpty());
  if (parts.empty() || parts[0] != "rdp-v1") {
    return absl::DataLossError("privacy accountant state: missing 'rdp-v1'");
  }
  std::vector<double> orders, rdp;
  for (size_t i = 1; i < parts.size(); ++i) {
    const size_t colon = parts[i].find(':');
    char* end = nullptr;
    if (colon == std::string::npos) {
      return absl::DataLossError(
          absl::StrCat("privacy accountant state: entry ", i,
                       " must be <order>:<rdp>"));
    }
    const std::string order_text = parts[i].substr(0, colon);
    const std::string value_text = parts[i].substr(colon + 1);
    const double order = std::strtod(order_text.c_str(), &end);
    if (order_text.empty() || *end != '\0' || !(order > 1)) {
      return absl::DataLossError(absl::StrCat(
          "privacy accountant state: entry ", i, ": bad order"));
    }
    const double value = std::strtod(value_text.c_str(), &end);
    if (value_text.empty() || *end != '\0' || !(value >= 0)) {
      return absl::DataLossError(absl::StrCat(
          "privacy accountant state: entry ", i, ": bad RDP value"));
    }
    orders.push_back(order);
    rdp.push_back(value);
  }
  RdpAccountant accountant(std::move(orders));
  accountant.rdp_ = std::move(rdp);
  return accountant;
}

absl::StatusOr<double> ComputeEpsilon(double q, double z, int64_t steps,
                                      double delta, RdpConversion conversion) {
  if (!(delta > 0 && delta < 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("delta must be in (0, 1), got ", delta));
  }
  RdpAccountant accountant;
  absl::Status s = accountant.Compose(q, z, steps);
  if (!s.ok()) return s;
  return accountant.Epsilon(delta, conversion);
}

absl::StatusOr<double> NoiseMultiplierFor(double q, int64_t steps,
                                          double delta, double target_epsilon,
                                          RdpConversion conversion) {
  if (!(target_epsilon > 0) || !std::isfinite(target_epsilon)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "target epsilon must be > 0 and finite, got ", target_epsilon));
  }
  auto eps = [&](double z) { return ComputeEpsilon(q, z, steps, delta, conversion); };
  double hi = 1.0;
  while (true) {
    absl::StatusOr<double> e = eps(hi);
    if (!e.ok()) return e.status();
    if (*e <= target_epsilon) break;
    hi *= 2;
    if (hi > 1e4) {
      return absl::OutOfRangeError(absl::StrCat(
          "no noise multiplier up to 10^4 reaches epsilon ", target_epsilon));
    }
  }
  // Below z ~ 0.05 the bound is vacuous for any useful epsilon; the series
  // also converge slowly there.
  while (hi > 0.05) {
    absl::StatusOr<double> e = eps(hi / 2);
    if (!e.ok()) return e.status();
    if (*e > target_epsilon) break;
    hi /= 2;
  }
  double lo = hi / 2;
  while (hi - lo > 1e-6 * hi) {
    const double mid = 0.5 * (lo + hi);
    absl::StatusOr<double> e = eps(mid);
    if (!e.ok()) return e.status();
    (*e <= target_epsilon ? hi : lo) = mid;
  }
  return hi;
}

}  // namespace layerfl

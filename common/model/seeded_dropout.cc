// SeedForwardRandomness (model.h) and the dropout that draws from it
// (module_model.h).
#include <mutex>

#include <ATen/CPUGeneratorImpl.h>

#include "common/model/model.h"
#include "common/model/module_model.h"

namespace layerfl {
namespace {

// The calling thread's generator of forward-pass randomness.
at::Generator& ThreadForwardGenerator() {
  thread_local at::Generator generator =
      at::make_generator<at::CPUGeneratorImpl>(/*seed_in=*/0);
  return generator;
}

}  // namespace

void SeedForwardRandomness(uint64_t seed) {
  at::Generator& generator = ThreadForwardGenerator();
  std::lock_guard<std::mutex> lock(generator.mutex());
  generator.set_current_seed(seed);
}

torch::Tensor SeededDropoutImpl::forward(const torch::Tensor& x) {
  if (!is_training() || p == 0.0) return x;
  // bernoulli_ takes the generator's lock itself.
  const torch::Tensor keep =
      torch::empty_like(x).bernoulli_(1.0 - p, ThreadForwardGenerator());
  return x * keep / (1.0 - p);
}

}  // namespace layerfl

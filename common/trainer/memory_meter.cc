#include "common/trainer/memory_meter.h"

#include <c10/core/Allocator.h>
#include <c10/util/ThreadLocalDebugInfo.h>

#include <algorithm>

namespace layerfl {
namespace {

class Reporter : public c10::MemoryReportingInfoBase {
 public:
  void reportMemoryUsage(void* /*ptr*/, int64_t alloc_size,
                         int64_t /*total_allocated*/,
                         int64_t /*total_reserved*/,
                         c10::Device /*device*/) override {
    current += alloc_size;
    peak = std::max(peak, current);
  }
  bool memoryProfilingEnabled() const override { return true; }

  int64_t current = 0;
  int64_t peak = 0;
};

}  // namespace

struct TensorMemoryMeter::Impl {
  std::shared_ptr<Reporter> reporter = std::make_shared<Reporter>();
  c10::DebugInfoGuard guard{c10::DebugInfoKind::PROFILER_STATE, reporter};
};

TensorMemoryMeter::TensorMemoryMeter() : impl_(std::make_unique<Impl>()) {}
TensorMemoryMeter::~TensorMemoryMeter() = default;

int64_t TensorMemoryMeter::current_bytes() const {
  return impl_->reporter->current;
}
int64_t TensorMemoryMeter::peak_bytes() const { return impl_->reporter->peak; }
void TensorMemoryMeter::ResetPeak() {
  impl_->reporter->peak = impl_->reporter->current;
}

}  // namespace layerfl

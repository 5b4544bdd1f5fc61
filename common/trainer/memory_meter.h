#ifndef LAYERFL_COMMON_TRAINER_MEMORY_METER_H_
#define LAYERFL_COMMON_TRAINER_MEMORY_METER_H_

// Counts the bytes of the tensors LibTorch allocates and frees on the
// calling thread while a meter is alive, through c10's memory-reporting hook
// (the one the profiler uses): every CPU tensor allocation and release is
// reported with its size, so the peak is exact for tensor memory, not
// sampled. Memory that existed before the meter started is not counted, and
// frees of it lower the current count below zero. One meter per thread at a
// time (it takes the thread's profiler debug-info slot).
//
// Not thread-safe; header torch-free.

#include <cstdint>
#include <memory>

namespace layerfl {

class TensorMemoryMeter {
 public:
  TensorMemoryMeter();
  ~TensorMemoryMeter();
  TensorMemoryMeter(const TensorMemoryMeter&) = delete;
  TensorMemoryMeter& operator=(const TensorMemoryMeter&) = delete;

  // Bytes allocated minus freed since the meter started, and its maximum.
  int64_t current_bytes() const;
  int64_t peak_bytes() const;
  // Starts a new peak from the current count.
  void ResetPeak();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace layerfl

#endif  // LAYERFL_COMMON_TRAINER_MEMORY_METER_H_

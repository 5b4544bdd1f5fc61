#ifndef LAYERFL_COMMON_UTIL_MEMORY_H_
#define LAYERFL_COMMON_UTIL_MEMORY_H_

#include <malloc.h>

#include <algorithm>
#include <cstdint>

namespace layerfl {

// For the client daemon: keep freed memory for reuse instead of returning it
// to the kernel. The same large buffers (chunks, layer tensors) come back every
// round, and fresh pages cost a fault and a zero-fill each (bench/transfer).
// Call at the start of main(), before any allocation worth keeping.
// `max_retained_bytes` bounds what the heap keeps (a process under a cgroup
// memory limit pays for it against the limit).
inline void RetainFreedMemory(int64_t max_retained_bytes = int64_t{1} << 30) {
  const int64_t retained = std::min<int64_t>(max_retained_bytes, 1 << 30);
  mallopt(M_MMAP_THRESHOLD,
          static_cast<int>(std::min<int64_t>(256 << 20, retained)));
  mallopt(M_TRIM_THRESHOLD, static_cast<int>(retained));
}

// For the coordinator: every allocation of `min_bytes` or more gets pages of
// its own that go back to the kernel when it is freed. Its large buffers
// (updates received, layer sums, replaced layer values) live for a round or
// less; kept in the heap, a bert-base coordinator stayed at 1086 MiB between
// rounds, 676 MiB with this (docs/foundation.md). A fixed threshold also
// stops glibc from raising it as buffers are freed. Call at the start of
// main().
inline void ReturnFreedMemory(int64_t min_bytes = int64_t{1} << 20) {
  mallopt(M_MMAP_THRESHOLD, static_cast<int>(min_bytes));
}

// For the coordinator: few malloc arenas for all threads. gRPC serves each
// client's calls on whichever thread is free, so with glibc's per-thread
// arenas (up to 8 per core) every arena ends up holding retained free memory
// of its own (bench/results/scale.txt has idle connected clients' RSS both
// ways). The coordinator's heavy work runs on one thread anyway (the
// service's executor). Call in main() before any thread starts.
inline void LimitMallocArenas(int arenas) { mallopt(M_ARENA_MAX, arenas); }

// Returns the free pages of the heap to the kernel (they stay retained
// otherwise, RetainFreedMemory): for a process whose memory peaks in bursts
// (10,000 clients joining) and then idles. Costs a walk of the heap's free
// lists; the next burst faults its pages in again.
inline void ReleaseFreeMemory() { malloc_trim(0); }

}  // namespace layerfl

#endif  // LAYERFL_COMMON_UTIL_MEMORY_H_

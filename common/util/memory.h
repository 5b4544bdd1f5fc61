#ifndef LAYERFL_COMMON_UTIL_MEMORY_H_
#define LAYERFL_COMMON_UTIL_MEMORY_H_

#include <malloc.h>

namespace layerfl {

// For the daemons: keep freed memory for reuse instead of returning it to
// the kernel. The same large buffers (chunks, layer tensors) come back every
// round, and fresh pages cost a fault and a zero-fill each (bench/transfer).
// Call at the start of main(), before any allocation worth keeping.
inline void RetainFreedMemory() {
  mallopt(M_MMAP_THRESHOLD, 256 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
}

}  // namespace layerfl

#endif  // LAYERFL_COMMON_UTIL_MEMORY_H_

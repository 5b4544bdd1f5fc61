#ifndef LAYERFL_CLIENT_DAEMON_LAYER_CACHE_H_
#define LAYERFL_CLIENT_DAEMON_LAYER_CACHE_H_

// The daemon's LayerCache on disk (layerfl-client --download_cache_dir):
// one file per layer, `<layer>.layer` (the name %-escaped to [A-Za-z0-9._-]),
// holding a state.v1.CachedLayer after the magic "LFLCACHE" and the CRC-32 of
// the message bytes. Each file is written to a temporary file and renamed
// into place, so a daemon killed mid-write leaves the old file or the new
// one (not synced: after a power loss a torn file fails its checksum); a
// damaged or foreign file is skipped and removed by Load. Not
// thread-safe. Torch-free.

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "client/daemon/daemon.h"

namespace layerfl {

// Opens (creating it when missing) the cache directory `dir`.
// InvalidArgument naming the path when it cannot be created or is not a
// directory.
absl::StatusOr<std::unique_ptr<LayerCache>> CreateFileLayerCache(
    const std::string& dir);

// A cache that forwards to `inner` and ends the process at once (_exit,
// like a kill -9: nothing flushed, no Leave) after the `layers`-th layer is
// stored: the fault a trial injects to kill a client mid-download.
std::unique_ptr<LayerCache> ExitAfterLayersCache(
    std::unique_ptr<LayerCache> inner, int64_t layers);

}  // namespace layerfl

#endif  // LAYERFL_CLIENT_DAEMON_LAYER_CACHE_H_

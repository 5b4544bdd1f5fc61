#ifndef LAYERFL_SERVER_ROUND_ASYNC_ENGINE_H_
#define LAYERFL_SERVER_ROUND_ASYNC_ENGINE_H_

// The asynchronous round engine (round_engine.h's AsyncOptions): reached
// through RoundEngine::Create with options.async.enabled. Internal to
// server/round.

#include <memory>

#include "absl/status/statusor.h"
#include "server/round/round_engine.h"

namespace layerfl {

// The journal of the running buffer, in the checkpoint store's directory.
inline constexpr char kAsyncJournalName[] = "async-buffer.journal";

// Whether a checkpoint's engine state was written by the asynchronous
// engine (each engine refuses the other's checkpoints by it).
bool IsAsyncEngineState(const std::string& engine_state);

absl::StatusOr<std::unique_ptr<RoundEngine>> CreateAsyncRoundEngine(
    const RoundEngineOptions& options, ModelWeights initial,
    RoundEngine::Deps deps);

}  // namespace layerfl

#endif  // LAYERFL_SERVER_ROUND_ASYNC_ENGINE_H_

#ifndef LAYERFL_CLIENT_DAEMON_CLIENT_H_
#define LAYERFL_CLIENT_DAEMON_CLIENT_H_

// layerfl-client: one client of a run, holding partition `partition` of the
// run config's data, built exactly as layerfl-sim builds its virtual client
// (BuildFederatedImages(config).clients[partition], id "client-%03d" by
// default), working through LocalWorker, so that a distributed run
// reproduces the simulation. Blocking; one per process.

#include <atomic>
#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "client/daemon/daemon.h"
#include "client/daemon/grpc_link.h"
#include "common/config/config.h"

namespace layerfl {

struct ClientOptions {
  int partition = 0;      // index into the run's client partitions
  DaemonOptions daemon;   // client_id "" = SimClientId(partition)
  GrpcLinkOptions link;
};

// InvalidArgument: the config or options are unusable. Otherwise as
// RunClientDaemon.
absl::Status RunClient(const RunConfig& config, const ClientOptions& options,
                       const std::atomic<bool>* stop);

}  // namespace layerfl

#endif  // LAYERFL_CLIENT_DAEMON_CLIENT_H_

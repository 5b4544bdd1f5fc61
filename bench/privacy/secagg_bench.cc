// Secure aggregation's cost per round against plain aggregation, for a
// 1M-parameter model in 4 layers of 250k values, each client training 2 of
// them (so every layer has about half the participants), N = 10, 50, 100
// participants, and 10% of them dropping after sharing their keys. Measured
// in one process on this machine, in the same run:
//   client: key advert + shares, and masking its update (quantization, the
//           self mask and one pairwise mask per peer sharing a layer);
//   server: reading the sums (rebuilding secrets, removing masks) against
//           summing the same float updates in plain;
//   bytes: what secure aggregation adds on the wire per client (advert,
//          shares out and in, unmask response), against the update itself.
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/secagg/secagg.h"

using namespace layerfl;

namespace {

double Seconds(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
      .count();
}

}  // namespace

int main() {
  const std::vector<int64_t> sizes(4, 250000);
  std::printf(
      "secure aggregation vs plain, 1M params (4 layers x 250k), 2 layers "
      "per client, 10%% drop after sharing\n");
  std::printf("%5s %12s %12s %12s %12s %10s %14s %12s\n", "N", "client_keys_s",
              "client_mask_s", "server_sum_s", "plain_sum_s", "server_x",
              "extra_bytes/cl", "update_bytes");
  for (int n : {10, 50, 100}) {
    const int t = (2 * n + 2) / 3;
    SecAggServer server(1, t, sizes, 1.0);
    std::map<std::string, std::unique_ptr<SecAggClient>> clients;
    std::map<std::string, std::vector<int>> layers;
    std::vector<std::string> ids;
    for (int i = 0; i < n; ++i) {
      char id[32];
      std::snprintf(id, sizeof(id), "client-%04d", i);
      ids.push_back(id);
      clients[id] = std::make_unique<SecAggClient>(id, 1);
      layers[id] = {i % 4, (i + 1) % 4};
      if (layers[id][0] > layers[id][1]) std::swap(layers[id][0], layers[id][1]);
    }
    int64_t extra = 0;
    auto t0 = std::chrono::steady_clock::now();
    for (const std::string& id : ids) {
      if (!server.AddAdvert(clients[id]->Advertise(), layers[id]).ok()) return 1;
      extra += 4 * 32 + static_cast<int64_t>(id.size()) + 8;
    }
    const double advert_s = Seconds(t0);
    SecAggRoster roster = *server.Roster();
    double keys_s = 0;
    for (const std::string& id : ids) {
      auto k0 = std::chrono::steady_clock::now();
      std::vector<SecAggShare> shares = *clients[id]->ShareKeys(roster);
      keys_s += Seconds(k0);
      for (const SecAggShare& s : shares) extra += 2 * s.ciphertext.size();
      if (!server.AddShares(id, shares).ok()) return 1;
    }
    // Every client's update: 2 layers of 250k values.
    std::vector<std::vector<float>> plain_updates;
    double mask_s = 0;
    int masked_clients = 0;
    std::vector<uint32_t> values(250000, 7);
    for (int i = 0; i < n; ++i) {
      const std::string& id = ids[i];
      plain_updates.push_back(std::vector<float>(250000, 0.001f * i));
      if (i % 10 == 9) continue;  // drops after sharing
      auto m0 = std::chrono::steady_clock::now();
      SecAggMaskedInput in =
          *clients[id]->Mask(server.SharesFor(id), {values, values});
      mask_s += Seconds(m0);
      ++masked_clients;
      if (!server.AddMaskedInput(in).ok()) return 1;
    }
    SecAggUnmaskRequest req = *server.UnmaskRequest();
    for (const std::string& id : req.survivors) {
      SecAggUnmaskResponse r = *clients[id]->Unmask(req);
      extra += 32 * static_cast<int64_t>(r.self_mask_shares.size() +
                                         r.key_shares.size());
      if (!server.AddUnmaskResponse(r).ok()) return 1;
    }
    auto s0 = std::chrono::steady_clock::now();
    auto sums = server.Sums();
    const double sum_s = Seconds(s0);
    if (!sums.ok()) {
      std::printf("sums failed: %s\n", std::string(sums.status().message()).c_str());
      return 1;
    }
    // Plain: the same number of layer updates summed as floats.
    std::vector<std::vector<float>> acc(4, std::vector<float>(250000, 0));
    auto p0 = std::chrono::steady_clock::now();
    for (int i = 0; i < n; ++i) {
      if (i % 10 == 9) continue;
      for (int l : layers[ids[i]]) {
        for (size_t k = 0; k < 250000; ++k) acc[l][k] += plain_updates[i][k];
      }
    }
    const double plain_s = Seconds(p0);
    std::printf("%5d %12.4f %12.4f %12.4f %12.4f %10.1f %14lld %12d\n", n,
                (advert_s + keys_s) / n, mask_s / masked_clients, sum_s,
                plain_s, sum_s / plain_s, static_cast<long long>(extra / n),
                2 * 250000 * 4);
  }
  return 0;
}

// layerfl-partition: writes each client's share of the run config's task
// into its own directory, so that a client machine holds only its own data
// (layerfl-client --data_dir): IDX images for fashion_mnist; for
// image_folder a copy of the client's image files in the training folder's
// layout plus labels.txt; train.tsv, train.jsonl or train.csv (plus
// labels.txt for jsonl/csv) and, unless model.kind is hf, the run's
// vocab.txt for text runs. The shares are exactly those layerfl-sim and
// `layerfl-client --partition i` build from the config and its seed.
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/config/config.h"
#include "common/data/federated_data.h"
#include "common/util/flags.h"

ABSL_FLAG(std::string, config, "", "run config (YAML); required");
ABSL_FLAG(
    std::string, out, "",
    "output directory; client i's data goes to <out>/client-%03d/; required");
ABSL_FLAG(std::string, clients, "",
          "comma-separated partition indices to write (default: all)");

int main(int argc, char** argv) {
  layerfl::ParseFlags(
      argc, argv, "layerfl-partition --config FILE --out DIR [--clients 0,3]");
  auto fail = [](const std::string& why, int code) {
    std::cerr << "layerfl-partition: " << why << "\n";
    return code;
  };
  // A dataset that cannot be built: 2 for bad input, else 1.
  auto fail_building = [&fail](const absl::Status& s) {
    return fail(std::string(s.message()),
                s.code() == absl::StatusCode::kInvalidArgument ? 2 : 1);
  };
  if (absl::GetFlag(FLAGS_config).empty())
    return fail("--config is required", 2);
  if (absl::GetFlag(FLAGS_out).empty()) return fail("--out is required", 2);
  absl::StatusOr<layerfl::RunConfig> config =
      layerfl::LoadRunConfig(absl::GetFlag(FLAGS_config));
  if (!config.ok()) return fail(std::string(config.status().message()), 2);

  std::vector<int> which;
  if (absl::GetFlag(FLAGS_clients).empty()) {
    for (int i = 0; i < config->data.num_clients; ++i) which.push_back(i);
  } else {
    for (absl::string_view part :
         absl::StrSplit(absl::GetFlag(FLAGS_clients), ',')) {
      int i = -1;
      if (!absl::SimpleAtoi(part, &i) || i < 0 ||
          i >= config->data.num_clients) {
        return fail(
            absl::StrCat("--clients: '", part, "' is not a partition in [0, ",
                         "data.num_clients = ", config->data.num_clients, ")"),
            2);
      }
      which.push_back(i);
    }
  }
  const std::string out = absl::GetFlag(FLAGS_out);
  if (layerfl::IsTextDataset(config->data)) {
    absl::StatusOr<layerfl::TextShares> shares =
        layerfl::BuildTextShares(*config);
    if (!shares.ok()) {
      return fail_building(shares.status());
    }
    for (int i : which) {
      const std::string dir =
          absl::StrCat(out, "/", layerfl::PartitionClientId(i));
      absl::Status s =
          layerfl::WriteClientTextShare(*config, *shares, i, dir);
      if (!s.ok()) return fail(std::string(s.message()), 1);
      std::cout << dir << ": " << shares->clients[i].size() << " examples, "
                << shares->vocab.size() << " words\n";
    }
    return 0;
  }
  if (config->data.dataset == "image_folder") {
    absl::StatusOr<layerfl::ImageFolderShares> shares =
        layerfl::BuildImageFolderShares(*config);
    if (!shares.ok()) {
      return fail_building(shares.status());
    }
    for (int i : which) {
      const std::string dir =
          absl::StrCat(out, "/", layerfl::PartitionClientId(i));
      absl::Status s =
          layerfl::CopyImageFiles(shares->clients[i], shares->labels, dir);
      if (!s.ok()) return fail(std::string(s.message()), 1);
      std::cout << dir << ": " << shares->clients[i].size() << " images\n";
    }
    return 0;
  }
  absl::StatusOr<layerfl::FederatedImages> images =
      layerfl::BuildFederatedImages(*config);
  if (!images.ok()) {
    return fail_building(images.status());
  }
  for (int i : which) {
    const std::string dir =
        absl::StrCat(out, "/", layerfl::PartitionClientId(i));
    absl::Status s = layerfl::WriteClientImages(images->clients[i], dir);
    if (!s.ok()) return fail(std::string(s.message()), 1);
    std::cout << dir << ": " << images->clients[i].size() << " images\n";
  }
  return 0;
}

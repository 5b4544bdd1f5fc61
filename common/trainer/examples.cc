#include "common/trainer/examples.h"

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "common/data/federated_data.h"
#include "common/util/status_macros.h"

namespace layerfl {

Examples ImagesToExamples(const ImageSet& set) {
  Examples e;
  const int64_t n = set.size();
  at::Tensor raw = at::from_blob(const_cast<uint8_t*>(set.pixels.data()),
                                 {n, 1, set.rows, set.cols}, at::kByte);
  e.inputs =
      (raw.to(at::kFloat) / 255.0 - kFashionMnistMean) / kFashionMnistStd;
  std::vector<int64_t> labels(set.labels.begin(), set.labels.end());
  e.labels = at::from_blob(labels.data(), {n}, at::kLong).clone();
  return e;
}

Examples TextToExamples(const TextSet& set) {
  Examples e;
  const int64_t n = set.size();
  std::vector<int64_t> tokens(set.tokens.begin(), set.tokens.end());
  e.inputs = at::from_blob(tokens.data(), {n, set.max_len}, at::kLong).clone();
  std::vector<int64_t> labels(set.labels.begin(), set.labels.end());
  e.labels = at::from_blob(labels.data(), {n}, at::kLong).clone();
  return e;
}

absl::StatusOr<TaskExamples> BuildTaskExamples(const RunConfig& c, int which,
                                               bool with_holdout) {
  if (which != kAllClients && which != kNoClients &&
      (which < 0 || which >= c.data.num_clients)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "partition: must be in [0, data.num_clients = ", c.data.num_clients,
        "), got ", which));
  }
  const auto wanted = [which](size_t i) {
    return which == kAllClients || static_cast<size_t>(which) == i;
  };
  TaskExamples out;
  if (c.data.dataset == "tsv") {
    ASSIGN_OR_RETURN(FederatedText text, BuildFederatedText(c));
    for (size_t i = 0; i < text.clients.size(); ++i) {
      if (wanted(i)) out.clients.push_back(TextToExamples(text.clients[i]));
    }
    out.test = TextToExamples(text.test);
    return out;
  }
  if (which == kNoClients && !with_holdout) {
    ASSIGN_OR_RETURN(ImageSet test, BuildTestImages(c));
    out.test = ImagesToExamples(test);
    return out;
  }
  ASSIGN_OR_RETURN(FederatedImages images, BuildFederatedImages(c));
  for (size_t i = 0; i < images.clients.size(); ++i) {
    if (wanted(i)) out.clients.push_back(ImagesToExamples(images.clients[i]));
  }
  out.test = ImagesToExamples(images.test);
  out.holdout = std::move(images.holdout);
  return out;
}

}  // namespace layerfl

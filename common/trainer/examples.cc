#include "common/trainer/examples.h"

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "common/data/federated_data.h"
#include "common/util/status_macros.h"

namespace layerfl {

namespace {

at::Tensor Normalize(const Examples& e, at::Tensor batch) {
  if (batch.scalar_type() != at::kByte) return batch;
  at::Tensor x = batch.to(at::kFloat) / 255.0;
  for (size_t c = 0; c < e.mean.size(); ++c) {
    x.select(1, static_cast<int64_t>(c)).sub_(e.mean[c]).div_(e.std[c]);
  }
  return x;
}

}  // namespace

at::Tensor Examples::Inputs(const at::Tensor& index) const {
  return Normalize(*this, inputs.index_select(0, index));
}

at::Tensor Examples::Inputs(int64_t start, int64_t len) const {
  return Normalize(*this, inputs.narrow(0, start, len));
}

Examples ImagesToExamples(const ImageSet& set) {
  Examples e;
  const int64_t n = set.size();
  e.inputs = at::from_blob(const_cast<uint8_t*>(set.pixels.data()),
                           {n, set.channels, set.rows, set.cols}, at::kByte)
                 .clone();
  e.mean = set.mean;
  e.std = set.std;
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
  if (IsTextDataset(c.data)) {
    ASSIGN_OR_RETURN(FederatedText text, BuildFederatedText(c));
    for (size_t i = 0; i < text.clients.size(); ++i) {
      if (wanted(i)) out.clients.push_back(TextToExamples(text.clients[i]));
    }
    out.test = TextToExamples(text.test);
    return out;
  }
  // Image folders have no pretraining hold-out.
  if (which == kNoClients &&
      (!with_holdout || c.data.dataset == "image_folder")) {
    ASSIGN_OR_RETURN(ImageSet test, BuildTestImages(c));
    out.test = ImagesToExamples(test);
    return out;
  }
  ASSIGN_OR_RETURN(FederatedImages images,
                   BuildFederatedImages(c, which == kAllClients ? -1 : which));
  for (size_t i = 0; i < images.clients.size(); ++i) {
    if (wanted(i)) out.clients.push_back(ImagesToExamples(images.clients[i]));
  }
  out.test = ImagesToExamples(images.test);
  out.holdout = std::move(images.holdout);
  return out;
}

}  // namespace layerfl

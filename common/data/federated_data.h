#ifndef LAYERFL_COMMON_DATA_FEDERATED_DATA_H_
#define LAYERFL_COMMON_DATA_FEDERATED_DATA_H_

// The federated image task the config describes, assembled once: the
// training images split into a pretraining hold-out and the clients' part,
// the clients' partition (with each client's domain transform applied under
// feature shift), and the test set. Reproducible from config.seed.

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/config/config.h"
#include "common/data/idx.h"
#include "common/data/text.h"

namespace layerfl {

// Seed of the pretraining hold-out split, fixed across runs.
inline constexpr uint64_t kPretrainSplitSeed = 0x4c61796572464cULL;

struct FederatedImages {
  // For pretraining only, disjoint from every client's data; the same images
  // whatever config.seed is.
  ImageSet holdout;
  std::vector<ImageSet> clients;  // data.num_clients partitions
  std::vector<int> client_domain;  // index into data.domains; empty unless feature_shift
  // Test images; under feature shift image i is seen through domain
  // i % domains, so every domain is evaluated equally.
  ImageSet test;
};

// The test images alone, exactly as BuildFederatedImages makes them (first
// data.max_test_examples; under feature shift each seen through its
// domain): all an evaluator needs, without the training images.
absl::StatusOr<ImageSet> BuildTestImages(const RunConfig& config);

// Loads Fashion-MNIST from data.dir and builds the above. Errors name the
// file or the config field at fault.
absl::StatusOr<FederatedImages> BuildFederatedImages(const RunConfig& config);

// The federated text-classification task (data.dataset tsv): the training
// file split into the clients' partitions (iid or dirichlet, from
// config.seed), the test file, both encoded with one tokenizer built from the
// training file (model.vocab_size words, model.max_len tokens per example).
struct FederatedText {
  std::vector<TextSet> clients;  // data.num_clients partitions
  TextSet test;
  std::vector<std::string> vocab;  // the tokenizer's words, id order
};

// The text task before encoding: each client's lines of the training file
// (partition order), the test lines, and the vocabulary built from the
// whole training file (id order). What layerfl-partition writes out.
struct TextShares {
  std::vector<std::vector<LabeledText>> clients;
  std::vector<LabeledText> test;
  std::vector<std::string> vocab;
};
absl::StatusOr<TextShares> BuildTextShares(const RunConfig& config);

// Reads data.train_tsv and data.test_tsv and builds the above, encoded. Errors name
// the file (and line) or the config field at fault: a label outside
// [0, model.num_classes), feature_shift (an image-only partition), a
// training file with fewer examples than clients.
absl::StatusOr<FederatedText> BuildFederatedText(const RunConfig& config);

// The id of the client holding partition `index`: "client-007". The
// simulator, layerfl-client and layerfl-partition all name clients this way.
std::string PartitionClientId(int index);

// A client's own training images in `dir`: train-images-idx3-ubyte and
// train-labels-idx1-ubyte, each plain or .gz (the layout of Fashion-MNIST and
// of what WriteClientImages writes). Errors name the file: NotFound,
// the IDX reader's errors, and InvalidArgument when the images are not
// model.image_size square or a label is outside [0, model.num_classes).
absl::StatusOr<ImageSet> LoadClientImages(const std::string& dir,
                                          const RunConfig& config);

// Writes `images` into `dir` (created if missing) in the layout
// LoadClientImages reads.
absl::Status WriteClientImages(const ImageSet& images, const std::string& dir);

// A text client's own data in `dir`: train.tsv (label<TAB>text lines) and
// vocab.txt (the run's vocabulary, one word a line in id order, as
// BuildTextShares makes it), encoded with model.max_len. Errors name the
// file: ReadTsv's, a label outside [0, model.num_classes), a vocabulary
// larger than model.vocab_size or not starting <pad>, <unk>.
absl::StatusOr<TextSet> LoadClientText(const std::string& dir, const RunConfig& config);

// Writes a text client's lines and the run's vocabulary into `dir` in the
// layout LoadClientText reads.
absl::Status WriteClientText(const std::vector<LabeledText>& examples,
                             const std::vector<std::string>& vocab,
                             const std::string& dir);

}  // namespace layerfl

#endif  // LAYERFL_COMMON_DATA_FEDERATED_DATA_H_

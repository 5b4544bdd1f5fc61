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
#include "common/data/image.h"
#include "common/data/image_folder.h"
#include "common/data/records.h"
#include "common/data/text.h"

namespace layerfl {

// Seed of the pretraining hold-out split, fixed across runs.
inline constexpr uint64_t kPretrainSplitSeed = 0x4c61796572464cULL;

// True for the text datasets: tsv, jsonl and csv.
bool IsTextDataset(const DataConfig& data);

struct FederatedImages {
  // For pretraining only, disjoint from every client's data; the same images
  // whatever config.seed is. Fashion-MNIST only (empty for image folders).
  ImageSet holdout;
  std::vector<ImageSet> clients;  // data.num_clients partitions
  // Index into data.domains (feature_shift) or into the sorted groups
  // (by_group) of each client; empty otherwise.
  std::vector<int> client_domain;
  // Test images; under feature shift image i is seen through domain
  // i % domains, so every domain is evaluated equally.
  ImageSet test;
};

// The test images alone, exactly as BuildFederatedImages makes them (first
// data.max_test_examples; under feature shift each seen through its
// domain): all an evaluator needs, without the training images.
absl::StatusOr<ImageSet> BuildTestImages(const RunConfig& config);

// Loads Fashion-MNIST from data.dir, or decodes the image folder
// data.train_path (data.dataset image_folder, see BuildImageFolderShares),
// and builds the above. `only_client` other than -1 builds that client's
// images only (none when it is not a partition index; the other entries of
// `clients` are empty sets): what one daemon needs.
// Errors name the file or the config field at fault.
absl::StatusOr<FederatedImages> BuildFederatedImages(const RunConfig& config,
                                                     int only_client = -1);

// How the run turns a decoded image into model input: the checkpoint's
// model.hf_dir/preprocessor_config.json when model.kind is hf and the file
// exists (ReadPreprocessorConfig), else model.channels (1 grey, 3 RGB),
// resized with data.resample to model.image_size square, normalised with
// data.image_mean/image_std (0.5 each when empty). InvalidArgument naming
// model.channels when it is not 1 or 3, or the file's errors.
absl::StatusOr<ImagePreprocess> ImagePreprocessFor(const RunConfig& config);

// The image-folder task before decoding: the label map (data.labels, or the
// training folder's class directories sorted), each client's files (a
// partition of data.train_path's listing: iid, dirichlet or by_group, from
// config.seed; listing order), and the test files (data.test_path, first
// data.max_test_examples). With data.group_field set both folders have the
// layout <path>/<group>/<class>/<file>; groups are the training folder's
// group directories, sorted.
struct ImageFolderShares {
  LabelMap labels;
  std::vector<std::string> groups;
  std::vector<std::vector<ImageFile>> clients;
  std::vector<int> client_group;  // by_group: index into groups; else empty
  std::vector<ImageFile> test;
};
// Errors name the folder, file or config field: ListImageFolder's; a class
// directory not in data.labels; more classes than model.num_classes; a
// partition that cannot be made (fewer images than clients, a group with
// fewer images than its clients, fewer clients than groups).
absl::StatusOr<ImageFolderShares> BuildImageFolderShares(const RunConfig& config);

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
//
// For jsonl and csv (data.train_path, data.test_path) the labels are names
// mapped to ids by data.labels or, when that is empty, by the training
// file's distinct labels sorted bytewise; the partition may also be
// by_group (data.group_field). When model.kind is hf the texts are encoded
// with the checkpoint's own tokenizer (model.hf_dir: sentencepiece.bpe.model
// -> SentencePiece, vocab.json + merges.txt -> byte-level BPE, vocab.txt ->
// WordPiece; special tokens added, padded/truncated to model.max_len) and
// `vocab` is empty.
struct TextShares {
  std::vector<std::vector<LabeledText>> clients;
  std::vector<LabeledText> test;
  std::vector<std::string> vocab;
  // jsonl, csv only: the label names in id order, and each client's records
  // as read (parallel to `clients`).
  std::vector<std::string> labels;
  std::vector<std::vector<TextRecord>> client_records;
  std::vector<std::string> groups;  // by_group: sorted group names
  std::vector<int> client_group;    // by_group: index into groups
};
absl::StatusOr<TextShares> BuildTextShares(const RunConfig& config);

// The tokenizer kind (for tokenizers::CreateTokenizer) of the checkpoint
// directory `dir`, from the files it holds: sentencepiece.bpe.model ->
// "sentencepiece", vocab.json + merges.txt -> "bpe", vocab.txt ->
// "wordpiece" (in that order of preference). NotFound naming model.hf_dir
// and `dir` when none is there.
absl::StatusOr<std::string> DetectTokenizerKind(const std::string& dir);

// Reads the training and test files and builds the above, encoded. Errors
// name the file (and line) or the config field at fault: a label outside
// [0, model.num_classes) or not in the label map, feature_shift (an
// image-only partition), a training file with fewer examples than clients,
// a checkpoint directory without a tokenizer.
absl::StatusOr<FederatedText> BuildFederatedText(const RunConfig& config);

// The id of the client holding partition `index`: "client-007". The
// simulator, layerfl-client and layerfl-partition all name clients this way.
std::string PartitionClientId(int index);

// A client's own training images in `dir`. fashion_mnist:
// train-images-idx3-ubyte and train-labels-idx1-ubyte, each plain or .gz
// (the layout of Fashion-MNIST and of what WriteClientImages writes).
// image_folder: an image folder (<class>/<file>, or
// <group>/<class>/<file> with data.group_field) and labels.txt, the run's
// label names in id order (what CopyImageFiles writes), decoded with
// ImagePreprocessFor(config). Errors name the file: NotFound, the readers'
// errors, and InvalidArgument when IDX images are not model.image_size
// square or a label is outside [0, model.num_classes).
absl::StatusOr<ImageSet> LoadClientImages(const std::string& dir,
                                          const RunConfig& config);

// Writes `images` into `dir` (created if missing) in the layout
// LoadClientImages reads.
absl::Status WriteClientImages(const ImageSet& images, const std::string& dir);

// A text client's own data in `dir`, encoded with model.max_len:
//   tsv:   train.tsv (label<TAB>text lines);
//   jsonl: train.jsonl, csv: train.csv (data.text_field, data.label_field
//          and, when set, data.group_field), plus labels.txt (the run's
//          label names in id order);
// and, unless model.kind is hf, vocab.txt (the run's vocabulary, one word a
// line in id order, as BuildTextShares makes it). Errors name the file (and
// line): the readers', a label outside [0, model.num_classes) or not in
// labels.txt, a vocabulary larger than model.vocab_size or not starting
// <pad>, <unk>.
absl::StatusOr<TextSet> LoadClientText(const std::string& dir, const RunConfig& config);

// Writes a text client's lines and the run's vocabulary into `dir` in the
// layout LoadClientText reads.
absl::Status WriteClientText(const std::vector<LabeledText>& examples,
                             const std::vector<std::string>& vocab,
                             const std::string& dir);

// Writes client `index`'s share of `shares` into `dir` in the layout
// LoadClientText reads for data.dataset (tsv, jsonl or csv; records keep
// their text, label and group strings byte for byte). InvalidArgument for an
// index outside the shares; the errno-derived code naming a file that cannot
// be written.
absl::Status WriteClientTextShare(const RunConfig& config,
                                  const TextShares& shares, int index,
                                  const std::string& dir);

}  // namespace layerfl

#endif  // LAYERFL_COMMON_DATA_FEDERATED_DATA_H_

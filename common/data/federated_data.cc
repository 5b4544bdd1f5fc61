#include "common/data/federated_data.h"

#include <filesystem>
#include <map>
#include <memory>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/data/file.h"
#include "common/data/partition.h"
#include "common/data/rng.h"
#include "common/data/transforms.h"
#include "common/model/hf_config.h"
#include "common/tokenizers/tokenizer.h"
#include "common/util/status_macros.h"
#include "nlohmann/json.hpp"

namespace layerfl {

namespace {

absl::StatusOr<std::vector<Domain>> ParseDomains(const RunConfig& c) {
  std::vector<Domain> domains;
  for (const std::string& name : c.data.domains) {
    ASSIGN_OR_RETURN(Domain d, ParseDomain(name));
    domains.push_back(d);
  }
  return domains;
}

absl::Status CheckImageDataset(const RunConfig& c) {
  if (c.data.dataset != "fashion_mnist" && c.data.dataset != "image_folder") {
    return absl::UnimplementedError(
        absl::StrCat("data.dataset: image runs need fashion_mnist or "
                     "image_folder, got '",
                     c.data.dataset, "'"));
  }
  return absl::OkStatus();
}

absl::Status CheckLabelCount(const LabelMap& labels, const std::string& where,
                             int num_classes) {
  if (labels.size() > num_classes) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": ", labels.size(), " classes, but model.num_classes is ",
        num_classes));
  }
  return absl::OkStatus();
}

// data.labels when stated, else the sorted distinct `found` names.
absl::StatusOr<LabelMap> RunLabels(const RunConfig& c,
                                   const std::vector<std::string>& found,
                                   const std::string& where) {
  if (!c.data.labels.empty()) {
    return LabelMap::FromNames(c.data.labels, "data.labels");
  }
  LabelMap labels = LabelMap::Sorted(found);
  RETURN_IF_ERROR(CheckLabelCount(labels, where, c.model.num_classes));
  return labels;
}

// Sorted distinct group names and each example's index among them.
std::pair<std::vector<std::string>, std::vector<int>> GroupIds(
    const std::vector<std::string>& names) {
  std::map<std::string, int> ids;
  for (const std::string& n : names) ids.emplace(n, 0);
  std::vector<std::string> sorted;
  for (auto& [name, id] : ids) {
    id = static_cast<int>(sorted.size());
    sorted.push_back(name);
  }
  std::vector<int> out;
  out.reserve(names.size());
  for (const std::string& n : names) out.push_back(ids[n]);
  return {std::move(sorted), std::move(out)};
}

// The run's partition of `n` training examples of `labels` (and `groups`
// for by_group, ignored otherwise); errors prefixed with `where`.
absl::StatusOr<Partition> PartitionFor(const RunConfig& c,
                                       const std::vector<int>& labels,
                                       const std::vector<std::string>& groups,
                                       std::vector<std::string>* group_names,
                                       const std::string& where) {
  absl::StatusOr<Partition> part;
  if (c.data.partition == "dirichlet") {
    part = PartitionDirichlet(labels, c.model.num_classes, c.data.num_clients,
                              c.data.alpha, c.seed);
  } else if (c.data.partition == "by_group") {
    auto [names, ids] = GroupIds(groups);
    part = PartitionByGroup(ids, static_cast<int>(names.size()),
                            c.data.num_clients, c.seed);
    if (part.ok()) {
      *group_names = std::move(names);
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": data.partition by_group over data.group_field '",
          c.data.group_field, "' (groups ", absl::StrJoin(names, ", "),
          "): ", part.status().message()));
    }
  } else {
    part = PartitionIid(static_cast<int64_t>(labels.size()),
                        c.data.num_clients, c.seed);
  }
  if (!part.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": ", part.status().message()));
  }
  return part;
}

}  // namespace

bool IsTextDataset(const DataConfig& data) {
  return data.dataset == "tsv" || data.dataset == "jsonl" ||
         data.dataset == "csv";
}

absl::StatusOr<ImagePreprocess> ImagePreprocessFor(const RunConfig& c) {
  int channels = c.model.channels;
  int image_size = c.model.image_size;
  if (c.model.kind == "hf") {
    ASSIGN_OR_RETURN(HfInputSpec input, ReadHfInputSpec(c.model.hf_dir));
    if (input.modality != HfModality::kVision) {
      return absl::InvalidArgumentError(absl::StrCat(
          "data.dataset: ", c.data.dataset, " needs a vision checkpoint, but "
          "model.hf_dir '", c.model.hf_dir, "' holds a ", input.model_type,
          " text model"));
    }
    channels = input.num_channels;
    image_size = input.image_size;
    const std::string path =
        (std::filesystem::path(c.model.hf_dir) / "preprocessor_config.json")
            .string();
    std::error_code ec;
    if (std::filesystem::exists(path, ec)) {
      ASSIGN_OR_RETURN(ImagePreprocess spec, ReadPreprocessorConfig(path));
      const bool cropped = spec.crop_rows > 0 && spec.crop_cols > 0;
      const int rows = cropped ? spec.crop_rows : spec.resize_rows;
      const int cols = cropped ? spec.crop_cols : spec.resize_cols;
      if (rows != image_size || cols != image_size ||
          spec.channels != channels) {
        return absl::InvalidArgumentError(absl::StrCat(
            path, ": gives ", spec.channels, " x ", rows, " x ", cols,
            " images, but the model in config.json takes ", channels, " x ",
            image_size, " x ", image_size));
      }
      return spec;
    }
  }
  if (channels != 1 && channels != 3) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model.channels: image folders decode to 1 (grey) or 3 (RGB) "
        "channels, got ",
        channels));
  }
  if (!c.data.image_mean.empty() &&
      (static_cast<int>(c.data.image_mean.size()) != channels ||
       c.data.image_std.size() != c.data.image_mean.size())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "data.image_mean, data.image_std: need model.channels (", channels,
        ") entries each, got ", c.data.image_mean.size(), " and ",
        c.data.image_std.size()));
  }
  ImagePreprocess spec;
  spec.channels = channels;
  spec.resize_rows = spec.resize_cols = image_size;
  spec.resample = c.data.resample == "bicubic" ? Resample::kBicubic
                                               : Resample::kBilinear;
  spec.mean = c.data.image_mean.empty() ? std::vector<double>(channels, 0.5)
                                        : c.data.image_mean;
  spec.std = c.data.image_std.empty() ? std::vector<double>(channels, 0.5)
                                      : c.data.image_std;
  return spec;
}

absl::StatusOr<ImageFolderShares> BuildImageFolderShares(const RunConfig& c) {
  if (c.data.dataset != "image_folder") {
    return absl::InvalidArgumentError(absl::StrCat(
        "data.dataset: image folder runs need image_folder, got '",
        c.data.dataset, "'"));
  }
  const bool grouped = !c.data.group_field.empty();
  ASSIGN_OR_RETURN(std::vector<ImageFile> train,
                   ListImageFolder(c.data.train_path, grouped));
  ASSIGN_OR_RETURN(std::vector<ImageFile> test,
                   ListImageFolder(c.data.test_path, grouped));
  std::vector<std::string> classes, groups;
  for (const ImageFile& f : train) {
    classes.push_back(f.class_name);
    groups.push_back(f.group);
  }
  ImageFolderShares out;
  ASSIGN_OR_RETURN(out.labels, RunLabels(c, classes, c.data.train_path));
  std::vector<int> labels;
  for (const std::vector<ImageFile>* files : {&train, &test}) {
    for (const ImageFile& f : *files) {
      absl::StatusOr<int> id = out.labels.Id(f.class_name);
      if (!id.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "class directory ",
            std::filesystem::path(f.path).parent_path().string(), ": \"",
            f.class_name, "\" is not in data.labels (",
            absl::StrJoin(out.labels.names(), ", "), ")"));
      }
      if (files == &train) labels.push_back(*id);
    }
  }
  ASSIGN_OR_RETURN(Partition part, PartitionFor(c, labels, groups, &out.groups,
                                                c.data.train_path));
  for (const std::vector<int64_t>& indices : part.clients) {
    std::vector<ImageFile> mine;
    mine.reserve(indices.size());
    for (int64_t i : indices) mine.push_back(train[i]);
    out.clients.push_back(std::move(mine));
  }
  out.client_group = std::move(part.domain);
  if (c.data.max_test_examples > 0 &&
      c.data.max_test_examples < static_cast<int64_t>(test.size())) {
    test.resize(c.data.max_test_examples);
  }
  out.test = std::move(test);
  return out;
}

absl::StatusOr<ImageSet> BuildTestImages(const RunConfig& c) {
  RETURN_IF_ERROR(CheckImageDataset(c));
  if (c.data.dataset == "image_folder") {
    ASSIGN_OR_RETURN(ImageFolderShares shares, BuildImageFolderShares(c));
    ASSIGN_OR_RETURN(ImagePreprocess spec, ImagePreprocessFor(c));
    return LoadImageFiles(shares.test, shares.labels, spec);
  }
  ASSIGN_OR_RETURN(ImageSet test, LoadFashionMnist(c.data.dir, false));
  if (c.data.max_test_examples > 0 && c.data.max_test_examples < test.size()) {
    std::vector<int64_t> first(c.data.max_test_examples);
    for (int64_t i = 0; i < c.data.max_test_examples; ++i) first[i] = i;
    ASSIGN_OR_RETURN(test, Subset(test, first));
  }
  if (c.data.partition == "feature_shift") {
    ASSIGN_OR_RETURN(std::vector<Domain> domains, ParseDomains(c));
    for (int64_t i = 0; i < test.size(); ++i) {
      RETURN_IF_ERROR(ApplyDomain(domains[i % domains.size()], test.rows,
                                  test.cols, test.mutable_image(i),
                                  MixSeed(c.seed ^ 0x7e57ULL) + i));
    }
  }
  return test;
}

absl::StatusOr<FederatedImages> BuildFederatedImages(const RunConfig& c,
                                                     int only_client) {
  RETURN_IF_ERROR(CheckImageDataset(c));
  const auto wanted = [only_client](size_t i) {
    return only_client == -1 || static_cast<int64_t>(only_client) ==
                                    static_cast<int64_t>(i);
  };
  if (c.data.dataset == "image_folder") {
    ASSIGN_OR_RETURN(ImageFolderShares shares, BuildImageFolderShares(c));
    ASSIGN_OR_RETURN(ImagePreprocess spec, ImagePreprocessFor(c));
    FederatedImages out;
    for (size_t i = 0; i < shares.clients.size(); ++i) {
      if (!wanted(i)) {
        out.clients.emplace_back();
        continue;
      }
      ASSIGN_OR_RETURN(ImageSet client,
                       LoadImageFiles(shares.clients[i], shares.labels, spec));
      out.clients.push_back(std::move(client));
    }
    out.client_domain = std::move(shares.client_group);
    ASSIGN_OR_RETURN(out.test, LoadImageFiles(shares.test, shares.labels, spec));
    return out;
  }
  ASSIGN_OR_RETURN(ImageSet train, LoadFashionMnist(c.data.dir, true));
  ASSIGN_OR_RETURN(ImageSet test, BuildTestImages(c));
  // The hold-out does not depend on the run seed: one cached pretrained
  // checkpoint then serves every seed without ever having seen a client's
  // images.
  ASSIGN_OR_RETURN(auto split, SplitHoldout(train.size(),
                                            c.data.pretrain_fraction,
                                            kPretrainSplitSeed));
  FederatedImages out;
  ASSIGN_OR_RETURN(out.holdout, Subset(train, split.first));
  ASSIGN_OR_RETURN(ImageSet fed, Subset(train, split.second));
  Partition part;
  if (c.data.partition == "dirichlet") {
    ASSIGN_OR_RETURN(part, PartitionDirichlet(fed.labels, c.model.num_classes,
                                              c.data.num_clients, c.data.alpha,
                                              c.seed));
  } else if (c.data.partition == "feature_shift") {
    ASSIGN_OR_RETURN(part, PartitionFeatureShift(
                               fed.size(), c.data.num_clients,
                               static_cast<int>(c.data.domains.size()), c.seed));
  } else {
    ASSIGN_OR_RETURN(part, PartitionIid(fed.size(), c.data.num_clients, c.seed));
  }
  ASSIGN_OR_RETURN(std::vector<Domain> domains, ParseDomains(c));
  for (size_t i = 0; i < part.clients.size(); ++i) {
    if (!wanted(i)) {
      out.clients.emplace_back();
      continue;
    }
    ASSIGN_OR_RETURN(ImageSet client, Subset(fed, part.clients[i]));
    if (!part.domain.empty()) {
      ASSIGN_OR_RETURN(client, ApplyDomainToAll(client, domains[part.domain[i]],
                                                MixSeed(c.seed + i)));
    }
    out.clients.push_back(std::move(client));
  }
  out.client_domain = part.domain;
  out.test = std::move(test);
  return out;
}

namespace {

absl::Status CheckTextLabels(const std::vector<LabeledText>& examples,
                             const std::string& path, int num_classes) {
  for (size_t i = 0; i < examples.size(); ++i) {
    if (examples[i].label >= num_classes) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": example ", i + 1, " has label ", examples[i].label,
          ", outside [0, model.num_classes = ", num_classes, ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

namespace {

// The tokenizer a run encodes its texts with: the checkpoint's own when
// model.kind is hf, else the word-level one of the run's vocabulary.
class TextEncoder {
 public:
  static absl::StatusOr<TextEncoder> Create(const RunConfig& c,
                                            std::vector<std::string> vocab) {
    TextEncoder e;
    e.max_len_ = c.model.max_len;
    if (c.model.kind == "hf") {
      ASSIGN_OR_RETURN(HfInputSpec input, ReadHfInputSpec(c.model.hf_dir));
      if (input.modality != HfModality::kText) {
        return absl::InvalidArgumentError(absl::StrCat(
            "data.dataset: ", c.data.dataset, " needs a text checkpoint, but "
            "model.hf_dir '", c.model.hf_dir, "' holds a ", input.model_type,
            " vision model"));
      }
      if (c.model.max_len > input.max_positions) {
        return absl::InvalidArgumentError(absl::StrCat(
            "model.max_len: the checkpoint in '", c.model.hf_dir,
            "' takes at most ", input.max_positions, " tokens, got ",
            c.model.max_len));
      }
      ASSIGN_OR_RETURN(std::string kind, DetectTokenizerKind(c.model.hf_dir));
      absl::StatusOr<std::unique_ptr<tokenizers::Tokenizer>> t =
          tokenizers::CreateTokenizer(kind, c.model.hf_dir);
      if (!t.ok()) {
        return absl::Status(t.status().code(),
                            absl::StrCat("model.hf_dir: ", t.status().message()));
      }
      e.checkpoint_ = std::move(*t);
      return e;
    }
    ASSIGN_OR_RETURN(Tokenizer words, Tokenizer::FromVocab(std::move(vocab)));
    e.words_.emplace(std::move(words));
    return e;
  }

  absl::StatusOr<TextSet> Encode(const std::vector<LabeledText>& examples) const {
    if (words_.has_value()) return EncodeAll(*words_, examples, max_len_);
    TextSet set;
    set.max_len = max_len_;
    set.tokens.reserve(examples.size() * max_len_);
    set.labels.reserve(examples.size());
    for (const LabeledText& example : examples) {
      absl::StatusOr<tokenizers::Encoding> enc =
          checkpoint_->Encode(example.text, max_len_);
      if (!enc.ok()) {
        return absl::Status(enc.status().code(),
                            absl::StrCat("encoding with model.hf_dir's tokenizer: ",
                                         enc.status().message()));
      }
      set.tokens.insert(set.tokens.end(), enc->ids.begin(), enc->ids.end());
      set.labels.push_back(example.label);
    }
    return set;
  }

 private:
  int max_len_ = 0;
  std::optional<Tokenizer> words_;
  std::shared_ptr<const tokenizers::Tokenizer> checkpoint_;
};

absl::StatusOr<std::vector<TextRecord>> ReadRecords(const RunConfig& c,
                                                    const std::string& path) {
  const RecordFields fields{c.data.text_field, c.data.label_field,
                            c.data.group_field};
  return c.data.dataset == "csv" ? ReadCsv(path, fields) : ReadJsonl(path, fields);
}

// A label name must fit one line of labels.txt.
absl::Status CheckLabelNames(const std::vector<TextRecord>& records,
                             const std::string& path) {
  for (const TextRecord& r : records) {
    if (r.label.find_first_of("\r\n") != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", r.line, ": label contains a line break"));
    }
  }
  return absl::OkStatus();
}

std::string ShareTextName(const RunConfig& c) {
  return c.data.dataset == "csv" ? "train.csv" : "train.jsonl";
}

constexpr char kLabelsFileName[] = "labels.txt";

}  // namespace

absl::StatusOr<std::string> DetectTokenizerKind(const std::string& dir) {
  const std::filesystem::path d(dir);
  std::error_code ec;
  const auto has = [&](const char* name) {
    return std::filesystem::exists(d / name, ec);
  };
  if (has("sentencepiece.bpe.model")) return std::string("sentencepiece");
  if (has("vocab.json") && has("merges.txt")) return std::string("bpe");
  if (has("vocab.txt")) return std::string("wordpiece");
  return absl::NotFoundError(absl::StrCat(
      "model.hf_dir: ", dir,
      " holds no tokenizer (sentencepiece.bpe.model, vocab.json + merges.txt, "
      "or vocab.txt)"));
}

absl::StatusOr<TextShares> BuildTextShares(const RunConfig& c) {
  if (!IsTextDataset(c.data)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "data.dataset: text runs need tsv, jsonl or csv, got '",
        c.data.dataset, "'"));
  }
  if (c.data.partition == "feature_shift") {
    return absl::InvalidArgumentError(
        "data.partition: feature_shift transforms images; text runs take iid, "
        "dirichlet or by_group");
  }
  TextShares out;
  std::vector<LabeledText> train, test;
  std::vector<TextRecord> train_records;
  const bool tsv = c.data.dataset == "tsv";
  const std::string train_path = tsv ? c.data.train_tsv : c.data.train_path;
  const std::string test_path = tsv ? c.data.test_tsv : c.data.test_path;
  if (tsv) {
    ASSIGN_OR_RETURN(train, ReadTsv(train_path));
    ASSIGN_OR_RETURN(test, ReadTsv(test_path));
  } else {
    ASSIGN_OR_RETURN(train_records, ReadRecords(c, train_path));
    ASSIGN_OR_RETURN(std::vector<TextRecord> test_records,
                     ReadRecords(c, test_path));
    RETURN_IF_ERROR(CheckLabelNames(train_records, train_path));
    std::vector<std::string> names;
    for (const TextRecord& r : train_records) names.push_back(r.label);
    ASSIGN_OR_RETURN(LabelMap labels, RunLabels(c, names, train_path));
    ASSIGN_OR_RETURN(train, MapLabels(train_records, labels, train_path));
    ASSIGN_OR_RETURN(test, MapLabels(test_records, labels, test_path));
    out.labels = labels.names();
  }
  RETURN_IF_ERROR(CheckTextLabels(train, train_path, c.model.num_classes));
  RETURN_IF_ERROR(CheckTextLabels(test, test_path, c.model.num_classes));
  if (c.data.max_test_examples > 0 &&
      c.data.max_test_examples < static_cast<int64_t>(test.size())) {
    test.resize(c.data.max_test_examples);
  }
  if (c.model.kind != "hf") {
    ASSIGN_OR_RETURN(Tokenizer tokenizer,
                     Tokenizer::Build(train, c.model.vocab_size));
    out.vocab = tokenizer.vocab();
  }
  std::vector<int> labels;
  labels.reserve(train.size());
  for (const LabeledText& t : train) labels.push_back(t.label);
  std::vector<std::string> groups;
  for (const TextRecord& r : train_records) groups.push_back(r.group);
  ASSIGN_OR_RETURN(Partition part,
                   PartitionFor(c, labels, groups, &out.groups, train_path));
  for (const std::vector<int64_t>& indices : part.clients) {
    std::vector<LabeledText> mine;
    mine.reserve(indices.size());
    for (int64_t i : indices) mine.push_back(train[i]);
    out.clients.push_back(std::move(mine));
    if (!tsv) {
      std::vector<TextRecord> records;
      records.reserve(indices.size());
      for (int64_t i : indices) records.push_back(train_records[i]);
      out.client_records.push_back(std::move(records));
    }
  }
  if (c.data.partition == "by_group") out.client_group = std::move(part.domain);
  out.test = std::move(test);
  return out;
}

absl::StatusOr<FederatedText> BuildFederatedText(const RunConfig& c) {
  ASSIGN_OR_RETURN(TextShares shares, BuildTextShares(c));
  ASSIGN_OR_RETURN(TextEncoder encoder, TextEncoder::Create(c, shares.vocab));
  FederatedText out;
  for (const std::vector<LabeledText>& mine : shares.clients) {
    ASSIGN_OR_RETURN(TextSet set, encoder.Encode(mine));
    out.clients.push_back(std::move(set));
  }
  ASSIGN_OR_RETURN(out.test, encoder.Encode(shares.test));
  out.vocab = std::move(shares.vocab);
  return out;
}

std::string PartitionClientId(int index) {
  return absl::StrFormat("client-%03d", index);
}

namespace {
constexpr char kImagesName[] = "train-images-idx3-ubyte";
constexpr char kLabelsName[] = "train-labels-idx1-ubyte";
}  // namespace

namespace {

absl::StatusOr<LabelMap> ReadShareLabels(const std::string& dir,
                                         const RunConfig& c) {
  const std::string path = (std::filesystem::path(dir) / kLabelsFileName).string();
  ASSIGN_OR_RETURN(LabelMap labels, ReadLabelsFile(path));
  RETURN_IF_ERROR(CheckLabelCount(labels, path, c.model.num_classes));
  return labels;
}

}  // namespace

absl::StatusOr<ImageSet> LoadClientImages(const std::string& dir,
                                          const RunConfig& c) {
  if (c.data.dataset == "image_folder") {
    ASSIGN_OR_RETURN(std::vector<ImageFile> files,
                     ListImageFolder(dir, !c.data.group_field.empty()));
    ASSIGN_OR_RETURN(LabelMap labels, ReadShareLabels(dir, c));
    ASSIGN_OR_RETURN(ImagePreprocess spec, ImagePreprocessFor(c));
    return LoadImageFiles(files, labels, spec);
  }
  ASSIGN_OR_RETURN(ImageSet set, LoadFashionMnist(dir, true));
  const std::string where = (std::filesystem::path(dir) / kImagesName).string();
  if (set.rows != c.model.image_size || set.cols != c.model.image_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": the images are ", set.rows, "x", set.cols,
        ", the model takes ", c.model.image_size, "x", c.model.image_size,
        " (model.image_size)"));
  }
  for (int64_t i = 0; i < set.size(); ++i) {
    if (set.labels[i] < 0 || set.labels[i] >= c.model.num_classes) {
      return absl::InvalidArgumentError(absl::StrCat(
          (std::filesystem::path(dir) / kLabelsName).string(), ": label ",
          set.labels[i], " of example ", i, " is outside [0, ",
          c.model.num_classes, ") (model.num_classes)"));
    }
  }
  return set;
}

namespace {
constexpr char kTextName[] = "train.tsv";
constexpr char kVocabName[] = "vocab.txt";
}  // namespace

namespace {

absl::StatusOr<std::vector<std::string>> ReadVocabFile(const std::string& vocab_path,
                                                       const RunConfig& c) {
  ASSIGN_OR_RETURN(std::string vocab_text, ReadFileToString(vocab_path));
  std::vector<std::string> words = absl::StrSplit(vocab_text, '\n', absl::SkipEmpty());
  if (static_cast<int>(words.size()) > c.model.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        vocab_path, ": ", words.size(), " words, the model embeds ",
        c.model.vocab_size, " (model.vocab_size)"));
  }
  absl::Status valid = Tokenizer::FromVocab(words).status();
  if (!valid.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(vocab_path, ": ", valid.message()));
  }
  return words;
}

}  // namespace

absl::StatusOr<TextSet> LoadClientText(const std::string& dir, const RunConfig& c) {
  const std::filesystem::path d(dir);
  std::vector<LabeledText> examples;
  if (c.data.dataset == "jsonl" || c.data.dataset == "csv") {
    const std::string text_path = (d / ShareTextName(c)).string();
    ASSIGN_OR_RETURN(std::vector<TextRecord> records, ReadRecords(c, text_path));
    ASSIGN_OR_RETURN(LabelMap labels, ReadShareLabels(dir, c));
    ASSIGN_OR_RETURN(examples, MapLabels(records, labels, text_path));
  } else {
    const std::string text_path = (d / kTextName).string();
    ASSIGN_OR_RETURN(examples, ReadTsv(text_path));
    RETURN_IF_ERROR(CheckTextLabels(examples, text_path, c.model.num_classes));
  }
  std::vector<std::string> words;
  if (c.model.kind != "hf") {
    ASSIGN_OR_RETURN(words, ReadVocabFile((d / kVocabName).string(), c));
  }
  ASSIGN_OR_RETURN(TextEncoder encoder, TextEncoder::Create(c, std::move(words)));
  return encoder.Encode(examples);
}

absl::Status WriteClientTextShare(const RunConfig& c, const TextShares& shares,
                                  int index, const std::string& dir) {
  if (index < 0 || index >= static_cast<int>(shares.clients.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("client share ", index, " is outside [0, ",
                     shares.clients.size(), ")"));
  }
  if (c.data.dataset == "tsv") {
    return WriteClientText(shares.clients[index], shares.vocab, dir);
  }
  if (static_cast<size_t>(index) >= shares.client_records.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "client share ", index, ": no records for data.dataset ", c.data.dataset));
  }
  const bool grouped = !c.data.group_field.empty();
  std::string text;
  if (c.data.dataset == "csv") {
    absl::StrAppend(&text, CsvQuote(c.data.text_field), ",",
                    CsvQuote(c.data.label_field));
    if (grouped) absl::StrAppend(&text, ",", CsvQuote(c.data.group_field));
    text += "\n";
  }
  for (const TextRecord& r : shares.client_records[index]) {
    if (c.data.dataset == "csv") {
      absl::StrAppend(&text, CsvQuote(r.text), ",", CsvQuote(r.label));
      if (grouped) absl::StrAppend(&text, ",", CsvQuote(r.group));
      text += "\n";
    } else {
      nlohmann::json j = nlohmann::json::object();
      j[c.data.text_field] = r.text;
      j[c.data.label_field] = r.label;
      if (grouped) j[c.data.group_field] = r.group;
      absl::StrAppend(&text, j.dump(), "\n");
    }
  }
  const std::filesystem::path d(dir);  // WriteFileAtomically creates it
  RETURN_IF_ERROR(WriteFileAtomically((d / ShareTextName(c)).string(), text));
  ASSIGN_OR_RETURN(LabelMap labels, LabelMap::FromNames(shares.labels, "labels"));
  RETURN_IF_ERROR(WriteLabelsFile(labels, (d / kLabelsFileName).string()));
  if (shares.vocab.empty()) return absl::OkStatus();
  return WriteFileAtomically((d / kVocabName).string(),
                             absl::StrJoin(shares.vocab, "\n") + "\n");
}


absl::Status WriteClientText(const std::vector<LabeledText>& examples,
                             const std::vector<std::string>& vocab,
                             const std::string& dir) {
  std::string tsv;
  for (const LabeledText& e : examples) {
    // ReadTsv drops one trailing '\r' per line: a text that ends in one
    // ends in a space instead (both only separate words; same tokens).
    const bool cr = !e.text.empty() && e.text.back() == '\r';
    absl::StrAppend(&tsv, e.label, "\t",
                    cr ? absl::string_view(e.text).substr(0, e.text.size() - 1)
                       : absl::string_view(e.text),
                    cr ? " \n" : "\n");
  }
  const std::filesystem::path d(dir);  // WriteFileAtomically creates it
  RETURN_IF_ERROR(WriteFileAtomically((d / kTextName).string(), tsv));
  return WriteFileAtomically((d / kVocabName).string(), absl::StrJoin(vocab, "\n") + "\n");
}

absl::Status WriteClientImages(const ImageSet& images, const std::string& dir) {
  const std::filesystem::path d(dir);  // WriteFileAtomically creates it
  return WriteIdx(images, (d / kImagesName).string(), (d / kLabelsName).string());
}

}  // namespace layerfl

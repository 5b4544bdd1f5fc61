#include "common/data/federated_data.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/data/file.h"
#include "common/data/partition.h"
#include "common/data/rng.h"
#include "common/data/transforms.h"
#include "common/util/status_macros.h"

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
  if (c.data.dataset != "fashion_mnist") {
    return absl::UnimplementedError(absl::StrCat(
        "data.dataset: image runs need fashion_mnist, got '", c.data.dataset, "'"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ImageSet> BuildTestImages(const RunConfig& c) {
  RETURN_IF_ERROR(CheckImageDataset(c));
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

absl::StatusOr<FederatedImages> BuildFederatedImages(const RunConfig& c) {
  RETURN_IF_ERROR(CheckImageDataset(c));
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

absl::StatusOr<TextShares> BuildTextShares(const RunConfig& c) {
  if (c.data.dataset != "tsv") {
    return absl::InvalidArgumentError(absl::StrCat(
        "data.dataset: text runs need tsv, got '", c.data.dataset, "'"));
  }
  if (c.data.partition == "feature_shift") {
    return absl::InvalidArgumentError(
        "data.partition: feature_shift transforms images; text runs take iid or "
        "dirichlet");
  }
  ASSIGN_OR_RETURN(std::vector<LabeledText> train, ReadTsv(c.data.train_tsv));
  ASSIGN_OR_RETURN(std::vector<LabeledText> test, ReadTsv(c.data.test_tsv));
  RETURN_IF_ERROR(CheckTextLabels(train, c.data.train_tsv, c.model.num_classes));
  RETURN_IF_ERROR(CheckTextLabels(test, c.data.test_tsv, c.model.num_classes));
  if (c.data.max_test_examples > 0 &&
      c.data.max_test_examples < static_cast<int64_t>(test.size())) {
    test.resize(c.data.max_test_examples);
  }
  ASSIGN_OR_RETURN(Tokenizer tokenizer, Tokenizer::Build(train, c.model.vocab_size));
  std::vector<int> labels;
  labels.reserve(train.size());
  for (const LabeledText& t : train) labels.push_back(t.label);
  absl::StatusOr<Partition> part =
      c.data.partition == "dirichlet"
          ? PartitionDirichlet(labels, c.model.num_classes, c.data.num_clients,
                               c.data.alpha, c.seed)
          : PartitionIid(static_cast<int64_t>(train.size()), c.data.num_clients, c.seed);
  if (!part.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(c.data.train_tsv, ": ", part.status().message()));
  }
  TextShares out;
  for (const std::vector<int64_t>& indices : part->clients) {
    std::vector<LabeledText> mine;
    mine.reserve(indices.size());
    for (int64_t i : indices) mine.push_back(train[i]);
    out.clients.push_back(std::move(mine));
  }
  out.test = std::move(test);
  out.vocab = tokenizer.vocab();
  return out;
}

absl::StatusOr<FederatedText> BuildFederatedText(const RunConfig& c) {
  ASSIGN_OR_RETURN(TextShares shares, BuildTextShares(c));
  ASSIGN_OR_RETURN(Tokenizer tokenizer, Tokenizer::FromVocab(shares.vocab));
  FederatedText out;
  for (const std::vector<LabeledText>& mine : shares.clients) {
    out.clients.push_back(EncodeAll(tokenizer, mine, c.model.max_len));
  }
  out.test = EncodeAll(tokenizer, shares.test, c.model.max_len);
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

absl::StatusOr<ImageSet> LoadClientImages(const std::string& dir,
                                          const RunConfig& c) {
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

absl::StatusOr<TextSet> LoadClientText(const std::string& dir, const RunConfig& c) {
  const std::filesystem::path d(dir);
  const std::string text_path = (d / kTextName).string();
  const std::string vocab_path = (d / kVocabName).string();
  ASSIGN_OR_RETURN(std::vector<LabeledText> examples, ReadTsv(text_path));
  RETURN_IF_ERROR(CheckTextLabels(examples, text_path, c.model.num_classes));
  ASSIGN_OR_RETURN(std::string vocab_text, ReadFileToString(vocab_path));
  std::vector<std::string> words = absl::StrSplit(vocab_text, '\n', absl::SkipEmpty());
  if (static_cast<int>(words.size()) > c.model.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        vocab_path, ": ", words.size(), " words, the model embeds ",
        c.model.vocab_size, " (model.vocab_size)"));
  }
  absl::StatusOr<Tokenizer> tokenizer = Tokenizer::FromVocab(std::move(words));
  if (!tokenizer.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(vocab_path, ": ", tokenizer.status().message()));
  }
  return EncodeAll(*tokenizer, examples, c.model.max_len);
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

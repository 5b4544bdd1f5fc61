#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/tokenizers/internal.h"
#include "common/tokenizers/spm_model.h"
#include "common/tokenizers/tokenizer.h"
#include "common/util/status_macros.h"

namespace layerfl::tokenizers {
namespace {

using internal::SpecialToken;

// fairseq's first four ids, which upstream puts before SentencePiece's.
constexpr int32_t kBos = 0;
constexpr int32_t kPad = 1;
constexpr int32_t kEos = 2;
constexpr int32_t kUnk = 3;
// Every other SentencePiece id moves up by one.
constexpr int32_t kFairseqOffset = 1;

class XlmRobertaTokenizer final : public Tokenizer {
 public:
  XlmRobertaTokenizer(std::string path,
                      std::unique_ptr<internal::SpmModel> model)
      : path_(std::move(path)), model_(std::move(model)) {
    const int32_t pieces = model_->size();
    special_.cls = kBos;
    special_.sep = kEos;
    special_.pad = kPad;
    special_.unk = kUnk;
    special_.mask = pieces + kFairseqOffset;
    split_tokens_ = {{"<s>", kBos, false},
                     {"<pad>", kPad, false},
                     {"</s>", kEos, false},
                     {"<unk>", kUnk, false},
                     {"<mask>", special_.mask, /*lstrip=*/true}};
    // Upstream maps a piece to fairseq's id when its text is one of the four,
    // SentencePiece's unknown (id 0) to <unk>, and every other id i to i + 1.
    const absl::flat_hash_map<std::string, int32_t> fairseq = {
        {"<s>", kBos}, {"<pad>", kPad}, {"</s>", kEos}, {"<unk>", kUnk}};
    to_fairseq_.resize(static_cast<size_t>(pieces));
    for (int32_t id = 0; id < pieces; ++id) {
      auto it = fairseq.find(model_->IdToPiece(id));
      to_fairseq_[static_cast<size_t>(id)] = it != fairseq.end() ? it->second
                                             : id == 0           ? kUnk
                                                       : id + kFairseqOffset;
    }
  }

  absl::StatusOr<std::vector<int32_t>> Tokenize(
      absl::string_view text) const override {
    std::vector<int32_t> ids;
    for (const internal::TextPiece& piece :
         internal::SplitOnSpecialTokens(text, split_tokens_)) {
      if (piece.special_id >= 0) {
        ids.push_back(piece.special_id);
        continue;
      }
      absl::StatusOr<std::vector<int>> spm_ids = model_->Encode(piece.text);
      if (!spm_ids.ok()) {
        return absl::Status(
            spm_ids.status().code(),
            absl::StrCat(path_, ": ", spm_ids.status().message()));
      }
      for (int id : *spm_ids) {
        if (id < 0 || static_cast<size_t>(id) >= to_fairseq_.size()) {
          return absl::InternalError(
              absl::StrCat(path_, ": SentencePiece gave id ", id,
                           " outside its ", to_fairseq_.size(), " pieces"));
        }
        ids.push_back(to_fairseq_[static_cast<size_t>(id)]);
      }
    }
    return ids;
  }

  absl::StatusOr<std::string> IdToToken(int32_t id) const override {
    for (const SpecialToken& s : split_tokens_) {
      if (s.id == id) return s.text;
    }
    if (id <= kUnk || id >= vocab_size()) {
      return absl::NotFoundError(absl::StrCat("no token has id ", id));
    }
    return model_->IdToPiece(id - kFairseqOffset);
  }

  // The pieces, the offset, and <mask>.
  int32_t vocab_size() const override {
    return model_->size() + kFairseqOffset + 1;
  }

  const SpecialTokenIds& special_ids() const override { return special_; }

 private:
  const std::string path_;
  const std::unique_ptr<internal::SpmModel> model_;
  SpecialTokenIds special_;
  std::vector<SpecialToken> split_tokens_;
  std::vector<int32_t> to_fairseq_;  // by SentencePiece id
};

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> CreateSentencePieceTokenizer(
    const std::string& model_file) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(model_file, ec)) {
    return absl::NotFoundError(absl::StrCat(model_file, ": cannot open"));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<internal::SpmModel> model,
                   internal::SpmModel::Load(model_file));
  return std::make_unique<XlmRobertaTokenizer>(model_file, std::move(model));
}

}  // namespace layerfl::tokenizers

#include "common/tokenizers/tokenizer.h"

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "common/tokenizers/internal.h"
#include "common/util/status_macros.h"
#include "nlohmann/json.hpp"

namespace layerfl::tokenizers {
namespace {

using ::nlohmann::json;

// One optional JSON config file of a checkpoint directory.
struct ConfigFile {
  std::string path;
  std::string text;
  json object = json::object();
};

absl::StatusOr<ConfigFile> ReadConfigFile(const std::string& path) {
  ConfigFile file;
  file.path = path;
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return file;
  ASSIGN_OR_RETURN(file.text, internal::ReadFile(path));
  ASSIGN_OR_RETURN(json parsed, internal::ParseJson(path, file.text));
  if (!parsed.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a JSON object"));
  }
  file.object = std::move(parsed);
  return file;
}

absl::Status WrongType(const ConfigFile& file, absl::string_view key,
                       absl::string_view want) {
  return absl::InvalidArgumentError(absl::StrCat(
      internal::Where(file.path, internal::LineOfJsonKey(file.text, key)), "\"",
      key, "\" must be ", want));
}

absl::Status ReadBool(const ConfigFile& file, absl::string_view key,
                      bool* value) {
  auto it = file.object.find(std::string(key));
  if (it == file.object.end()) return absl::OkStatus();
  if (!it->is_boolean()) return WrongType(file, key, "true or false");
  *value = it->get<bool>();
  return absl::OkStatus();
}

absl::Status ReadOptionalBool(const ConfigFile& file, absl::string_view key,
                              std::optional<bool>* value) {
  auto it = file.object.find(std::string(key));
  if (it == file.object.end()) return absl::OkStatus();
  if (it->is_null()) {
    value->reset();
  } else if (it->is_boolean()) {
    *value = it->get<bool>();
  } else {
    return WrongType(file, key, "true, false or null");
  }
  return absl::OkStatus();
}

// A token is a string, or an object (upstream's serialized AddedToken) whose
// "content" is a string; null keeps `*value`.
absl::Status ReadToken(const ConfigFile& file, absl::string_view key,
                       std::string* value) {
  auto it = file.object.find(std::string(key));
  if (it == file.object.end() || it->is_null()) return absl::OkStatus();
  if (it->is_string()) {
    *value = it->get<std::string>();
    return absl::OkStatus();
  }
  if (it->is_object()) {
    auto content = it->find("content");
    if (content != it->end() && content->is_string()) {
      *value = content->get<std::string>();
      return absl::OkStatus();
    }
  }
  return WrongType(file, key,
                   "a string or an object with a string \"content\"");
}

absl::Status ReadSpecialTokens(const ConfigFile& file, SpecialTokens* s) {
  RETURN_IF_ERROR(ReadToken(file, "unk_token", &s->unk));
  RETURN_IF_ERROR(ReadToken(file, "cls_token", &s->cls));
  RETURN_IF_ERROR(ReadToken(file, "sep_token", &s->sep));
  RETURN_IF_ERROR(ReadToken(file, "pad_token", &s->pad));
  return ReadToken(file, "mask_token", &s->mask);
}

// tokenizer_config.json, then special_tokens_map.json.
absl::StatusOr<std::vector<ConfigFile>> ReadConfigFiles(
    const std::filesystem::path& dir) {
  std::vector<ConfigFile> files;
  for (const char* name :
       {"tokenizer_config.json", "special_tokens_map.json"}) {
    ASSIGN_OR_RETURN(ConfigFile file, ReadConfigFile((dir / name).string()));
    files.push_back(std::move(file));
  }
  return files;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> WordPieceFromDir(
    const std::filesystem::path& dir) {
  ASSIGN_OR_RETURN(std::vector<ConfigFile> files, ReadConfigFiles(dir));
  WordPieceOptions options;
  for (const ConfigFile& file : files) {
    RETURN_IF_ERROR(ReadBool(file, "do_lower_case", &options.do_lower_case));
    RETURN_IF_ERROR(
        ReadOptionalBool(file, "strip_accents", &options.strip_accents));
    RETURN_IF_ERROR(ReadBool(file, "tokenize_chinese_chars",
                             &options.tokenize_chinese_chars));
    RETURN_IF_ERROR(ReadSpecialTokens(file, &options.special));
  }
  return CreateWordPieceTokenizer((dir / "vocab.txt").string(), options);
}

absl::StatusOr<std::unique_ptr<Tokenizer>> BpeFromDir(
    const std::filesystem::path& dir) {
  ASSIGN_OR_RETURN(std::vector<ConfigFile> files, ReadConfigFiles(dir));
  BpeOptions options;
  for (const ConfigFile& file : files) {
    RETURN_IF_ERROR(
        ReadBool(file, "add_prefix_space", &options.add_prefix_space));
    RETURN_IF_ERROR(ReadSpecialTokens(file, &options.special));
  }
  return CreateByteLevelBpeTokenizer((dir / "vocab.json").string(),
                                     (dir / "merges.txt").string(), options);
}

// XLM-R's special tokens are fixed by its id mapping: no config is read.
absl::StatusOr<std::unique_ptr<Tokenizer>> SentencePieceFromDir(
    const std::filesystem::path& dir) {
  return CreateSentencePieceTokenizer(
      (dir / "sentencepiece.bpe.model").string());
}

struct Kind {
  absl::string_view name;
  absl::StatusOr<std::unique_ptr<Tokenizer>> (*create)(
      const std::filesystem::path& dir);
};

constexpr Kind kKinds[] = {
    {"wordpiece", WordPieceFromDir},
    {"bpe", BpeFromDir},
    {"sentencepiece", SentencePieceFromDir},
};

}  // namespace

absl::StatusOr<Encoding> Tokenizer::Encode(absl::string_view text,
                                           int max_len) const {
  if (max_len < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_len must be at least 2 (room for the special "
                     "tokens), got ",
                     max_len));
  }
  ASSIGN_OR_RETURN(std::vector<int32_t> tokens, Tokenize(text));
  const SpecialTokenIds& special = special_ids();
  const size_t room = static_cast<size_t>(max_len) - 2;
  if (tokens.size() > room) tokens.resize(room);

  Encoding out;
  out.ids.reserve(static_cast<size_t>(max_len));
  out.ids.push_back(special.cls);
  out.ids.insert(out.ids.end(), tokens.begin(), tokens.end());
  out.ids.push_back(special.sep);
  out.attention_mask.assign(out.ids.size(), 1);
  out.ids.resize(static_cast<size_t>(max_len), special.pad);
  out.attention_mask.resize(static_cast<size_t>(max_len), 0);
  return out;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> CreateTokenizer(
    absl::string_view kind, const std::string& dir) {
  const std::filesystem::path root(dir);
  for (const Kind& k : kKinds) {
    if (k.name == kind) return k.create(root);
  }
  std::vector<absl::string_view> names;
  for (const Kind& k : kKinds) names.push_back(k.name);
  return absl::InvalidArgumentError(
      absl::StrCat("unknown tokenizer kind \"", kind,
                   "\" (want one of: ", absl::StrJoin(names, ", "), ")"));
}

}  // namespace layerfl::tokenizers

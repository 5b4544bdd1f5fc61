#ifndef LAYERFL_COMMON_TOKENIZERS_TOKENIZER_H_
#define LAYERFL_COMMON_TOKENIZERS_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

// The subword tokenizers of the pretrained text models, reading the files of a
// Hugging Face checkpoint directory and giving the ids the upstream (Python
// `transformers`) tokenizers give:
//   - WordPiece (BERT): vocab.txt.
//   - Byte-level BPE (RoBERTa): vocab.json + merges.txt.
//   - SentencePiece (XLM-R): sentencepiece.bpe.model, with fairseq's ids.
// (`layerfl::Tokenizer` in common/data/text.h is the word-level tokenizer of
// the small models trained from scratch; this one is a different namespace.)
namespace layerfl::tokenizers {

// Ids of the special tokens; -1 where the vocabulary has no such token.
struct SpecialTokenIds {
  int32_t cls = -1;  // First token of a model input ([CLS] / <s>).
  int32_t sep = -1;  // Last token of a model input ([SEP] / </s>).
  int32_t pad = -1;
  int32_t unk = -1;
  int32_t mask = -1;
};

// One model input of a fixed length.
struct Encoding {
  std::vector<int32_t> ids;             // max_len ids.
  std::vector<int32_t> attention_mask;  // max_len entries: 1 real, 0 padding.
};

// Text to token ids. Immutable after creation except for internal caches;
// every method is thread-safe. Input is UTF-8; invalid bytes are not an error
// (see each factory for how they are treated).
//
// Special tokens written in the text (e.g. "[SEP]", "<s>", "<mask>") are
// matched case-sensitively and give their own id, as upstream does; the mask
// token of RoBERTa and XLM-R also swallows the whitespace before it.
class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // The ids of `text`, without the special tokens a model input adds.
  // Internal only if SentencePiece fails.
  virtual absl::StatusOr<std::vector<int32_t>> Tokenize(
      absl::string_view text) const = 0;

  // The vocabulary entry of `id`; NotFound when no token has that id.
  virtual absl::StatusOr<std::string> IdToToken(int32_t id) const = 0;

  // One past the largest id (the embedding table's row count).
  virtual int32_t vocab_size() const = 0;

  virtual const SpecialTokenIds& special_ids() const = 0;

  // The model input of `text`, as upstream builds it for a single sequence
  // with truncation and padding to `max_len`: cls, the ids of Tokenize(text)
  // truncated at the end so that the whole fits, sep, then pad ids up to
  // `max_len`. InvalidArgument when max_len < 2.
  absl::StatusOr<Encoding> Encode(absl::string_view text, int max_len) const;
};

// Special tokens by their text; an empty string means "none".
struct SpecialTokens {
  std::string unk;
  std::string cls;
  std::string sep;
  std::string pad;
  std::string mask;
};

// BERT's BasicTokenizer and WordPiece settings (upstream's defaults, those of
// bert-base-uncased).
struct WordPieceOptions {
  // Lowercase (Python's str.lower()) each word. Default true.
  bool do_lower_case = true;
  // Strip accents (NFD, then drop nonspacing marks). Unset (the default)
  // follows do_lower_case, as upstream's `strip_accents=None`.
  std::optional<bool> strip_accents;
  // Put spaces around CJK ideographs so each is its own word. Default true.
  bool tokenize_chinese_chars = true;
  // Longer words (in code points) become unk. Default 100.
  int max_input_chars_per_word = 100;
  // unk, cls, sep and pad must be in the vocabulary; mask may be missing.
  SpecialTokens special = {"[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"};
};

// RoBERTa's byte-level BPE settings (upstream's defaults).
struct BpeOptions {
  // Put a space before the text, so its first word is encoded like the
  // others. Default false.
  bool add_prefix_space = false;
  // unk, cls, sep and pad must be in vocab.json; mask may be missing.
  SpecialTokens special = {"<unk>", "<s>", "</s>", "<pad>", "<mask>"};
};

// BERT. `vocab_txt`: one token a line, id = line number from 0 (LF, CRLF or
// CR line ends; a repeated token keeps its last id). Text: invalid UTF-8 bytes
// are dropped with the control characters. Errors: NotFound when the file is
// missing; InvalidArgument naming the file (and line) when a line is not
// UTF-8, the file is empty, a required special token is missing, or an option
// is out of range.
absl::StatusOr<std::unique_ptr<Tokenizer>> CreateWordPieceTokenizer(
    const std::string& vocab_txt, const WordPieceOptions& options = {});

// RoBERTa (GPT-2's byte-level BPE). `vocab_json`: an object of token ->
// non-negative id, ids distinct. `merges_txt`: one merge a line, the two parts
// separated by one space, rank = order; lines starting with "#version" are
// skipped; both parts and their concatenation must be in the vocabulary.
// Text: invalid UTF-8 bytes are kept as bytes, pre-tokenized like punctuation.
// Errors: NotFound when a file is missing; InvalidArgument naming the file and
// line of the first bad entry.
absl::StatusOr<std::unique_ptr<Tokenizer>> CreateByteLevelBpeTokenizer(
    const std::string& vocab_json, const std::string& merges_txt,
    const BpeOptions& options = {});

// XLM-R: a SentencePiece model with fairseq's ids, as upstream's
// XLMRobertaTokenizer: <s>=0, <pad>=1, </s>=2, <unk>=3 (also SentencePiece's
// unknown piece, id 0), every other piece its SentencePiece id + 1, and
// <mask> = pieces + 1. Text: handled by SentencePiece (its normalizer).
// Errors: NotFound when the file is missing; InvalidArgument naming the file
// when SentencePiece cannot load it; FailedPrecondition when SentencePiece
// itself (liblayerfl_spm_shim.so, built next to the executables; see
// spm_shim.h) cannot be loaded.
absl::StatusOr<std::unique_ptr<Tokenizer>> CreateSentencePieceTokenizer(
    const std::string& model_file);

// The tokenizer of a checkpoint directory, by `kind`:
//   "wordpiece":     dir/vocab.txt
//   "bpe":           dir/vocab.json and dir/merges.txt
//   "sentencepiece": dir/sentencepiece.bpe.model
// For "wordpiece" and "bpe", dir/tokenizer_config.json and then
// dir/special_tokens_map.json, when present, override the defaults above
// (the later file wins): do_lower_case, strip_accents (true, false or null),
// tokenize_chinese_chars, add_prefix_space, and unk_token, cls_token,
// sep_token, pad_token, mask_token (a string, or an object with "content";
// null keeps the default). Other keys are ignored. "sentencepiece" reads
// neither: XLM-R's special tokens are fixed by the id mapping.
// Errors: InvalidArgument for an unknown kind, a config file that is not a
// JSON object or has a key of the wrong type (naming file and line); those of
// the factory.
absl::StatusOr<std::unique_ptr<Tokenizer>> CreateTokenizer(
    absl::string_view kind, const std::string& dir);

}  // namespace layerfl::tokenizers

#endif  // LAYERFL_COMMON_TOKENIZERS_TOKENIZER_H_

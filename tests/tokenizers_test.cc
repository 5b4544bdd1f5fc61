// The tokenizers of BERT, RoBERTa and XLM-R (issue 23): hand-checked ids on
// tiny vocabularies, cross-checks against Python references (upstream's
// algorithms written out with Python's unicodedata and `regex`, and
// python3-sentencepiece), and bad files refused naming file and line.
#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/tokenizers/tokenizer.h"
#include "common/tokenizers/unicode.h"
#include "gmock/gmock.h"
#include "google/protobuf/struct.pb.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace layerfl::tokenizers {
namespace {

using ::nlohmann::json;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

MATCHER_P2(StatusIs, code, message, "") {
  const absl::Status& s = arg.status();
  *result_listener << "status: " << s;
  return s.code() == code &&
         ::testing::Matches(message)(std::string(s.message()));
}

// Debian's interpreter, which has python3-sentencepiece and python3-regex.
constexpr char kPython[] = "/usr/bin/python3";

class TempDir {
 public:
  TempDir() {
    std::string tmpl =
        (std::filesystem::path(::testing::TempDir()) / "tokenizers_test_XXXXXX")
            .string();
    path_ = mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string operator/(const std::string& name) const {
    return (std::filesystem::path(path_) / name).string();
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

void WriteFile(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary);
  out << data;
  ASSERT_TRUE(out.good()) << path;
}

std::string ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// Runs `command`, its output to `log`; the exit status.
int RunCommand(const std::string& command, const std::string& log) {
  return std::system(absl::StrCat(command, " >", log, " 2>&1").c_str());
}

std::unique_ptr<Tokenizer> MustCreate(
    absl::StatusOr<std::unique_ptr<Tokenizer>> t) {
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? std::move(*t) : nullptr;
}

std::vector<int32_t> Ids(const Tokenizer& t, const std::string& text) {
  absl::StatusOr<std::vector<int32_t>> ids = t.Tokenize(text);
  EXPECT_TRUE(ids.ok()) << ids.status();
  return ids.ok() ? *ids : std::vector<int32_t>{};
}

std::vector<std::string> Tokens(const Tokenizer& t, const std::string& text) {
  std::vector<std::string> out;
  for (int32_t id : Ids(t, text)) {
    absl::StatusOr<std::string> token = t.IdToToken(id);
    out.push_back(token.ok() ? *token : absl::StrCat("?", id));
  }
  return out;
}

// ---------------------------------------------------------------- WordPiece

// id = line number.
constexpr const char* kBertVocab[] = {
    "[PAD]", "[UNK]",     "[CLS]", "[SEP]",  "[MASK]",     // 0-4
    "hello", ",",         "world", "!",      "cafe",       // 5-9
    "naive", "un",        "##aff", "##able", "中",         // 10-14
    "国",    "a",         "##a",   "the",    "σ",          // 15-19
    "ς",     "οδο\u03c2", ".",     "i",      "##stanbul",  // 20-24
};

class WordPieceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    WriteFile(dir_ / "vocab.txt",
              absl::StrCat(absl::StrJoin(kBertVocab, "\n"), "\n"));
  }
  std::unique_ptr<Tokenizer> Create(const WordPieceOptions& options = {}) {
    return MustCreate(CreateWordPieceTokenizer(dir_ / "vocab.txt", options));
  }
  TempDir dir_;
};

TEST_F(WordPieceTest, LowercasesAndSplitsPunctuation) {
  auto t = Create();
  EXPECT_THAT(Ids(*t, "Hello, WORLD!"), ElementsAre(5, 6, 7, 8));
  EXPECT_THAT(Tokens(*t, "Hello, WORLD!"),
              ElementsAre("hello", ",", "world", "!"));
  EXPECT_EQ(t->vocab_size(), 25);
}

TEST_F(WordPieceTest, StripsAccentsWhenLowercasing) {
  auto t = Create();
  EXPECT_THAT(Ids(*t, "Café naïve"), ElementsAre(9, 10));
  // Already decomposed: e + COMBINING ACUTE ACCENT.
  EXPECT_THAT(Ids(*t, "Cafe\u0301"), ElementsAre(9));
  // İ lowercases to i + COMBINING DOT ABOVE, whose mark is then stripped.
  EXPECT_THAT(Ids(*t, "İstanbul"), ElementsAre(23, 24));
}

TEST_F(WordPieceTest, CasedKeepsCaseAndAccents) {
  WordPieceOptions cased;
  cased.do_lower_case = false;
  auto t = Create(cased);
  EXPECT_THAT(Ids(*t, "hello Hello café"), ElementsAre(5, 1, 1));
  cased.strip_accents = true;
  t = Create(cased);
  EXPECT_THAT(Ids(*t, "café"), ElementsAre(9));
}

TEST_F(WordPieceTest, GreekFinalSigmaAsPythonLower) {
  auto t = Create();
  // Σ lowercases to ς at the end of a word (even before "."), else σ.
  EXPECT_THAT(Ids(*t, "ΟΔΟΣ ΟΔΟΣ. Σ"), ElementsAre(21, 21, 22, 19));
}

TEST_F(WordPieceTest, UnknownWordIsUnk) {
  auto t = Create();
  EXPECT_THAT(Ids(*t, "hello xyzzy world"), ElementsAre(5, 1, 7));
  // A prefix matches but the rest does not: the whole word is [UNK].
  EXPECT_THAT(Ids(*t, "unaffableness"), ElementsAre(1));
}

TEST_F(WordPieceTest, GreedyLongestMatchFirst) {
  auto t = Create();
  EXPECT_THAT(Tokens(*t, "unaffable"), ElementsAre("un", "##aff", "##able"));
  EXPECT_THAT(Ids(*t, "unaffable"), ElementsAre(11, 12, 13));
}

TEST_F(WordPieceTest, WordsOverMaxCharsAreUnk) {
  auto t = Create();
  const std::vector<int32_t> hundred = Ids(*t, std::string(100, 'a'));
  ASSERT_EQ(hundred.size(), 100u);
  EXPECT_EQ(hundred[0], 16);
  EXPECT_EQ(hundred[99], 17);
  EXPECT_THAT(Ids(*t, std::string(101, 'a')), ElementsAre(1));
}

TEST_F(WordPieceTest, ChineseCharactersAreSplitOut) {
  auto t = Create();
  EXPECT_THAT(Ids(*t, "中国hello中"), ElementsAre(14, 15, 5, 14));
}

TEST_F(WordPieceTest, CleansControlsAndWhitespace) {
  auto t = Create();
  // \x01 and ZERO WIDTH SPACE (Cf) vanish; tab, NBSP and U+2028 separate.
  EXPECT_THAT(Ids(*t, "hel\x01lo\tworld\u00a0!\u2028hel\u200blo"),
              ElementsAre(5, 7, 8, 5));
  // Invalid UTF-8 is dropped like U+FFFD.
  EXPECT_THAT(Ids(*t, "hel\xfflo \xc3"), ElementsAre(5));
  EXPECT_THAT(Ids(*t, ""), ElementsAre());
  EXPECT_THAT(Ids(*t, " \t\n"), ElementsAre());
}

TEST_F(WordPieceTest, SpecialTokensInTextKeepTheirIds) {
  auto t = Create();
  EXPECT_THAT(Ids(*t, "hello [SEP]world[MASK]"), ElementsAre(5, 3, 7, 4));
  // Matched case-sensitively: "[sep]" is plain text.
  EXPECT_THAT(Ids(*t, "[sep]"), ElementsAre(1, 1, 1));
}

TEST_F(WordPieceTest, EncodeAddsSpecialsPadsAndMasks) {
  auto t = Create();
  EXPECT_EQ(t->special_ids().cls, 2);
  EXPECT_EQ(t->special_ids().sep, 3);
  EXPECT_EQ(t->special_ids().pad, 0);
  EXPECT_EQ(t->special_ids().unk, 1);
  EXPECT_EQ(t->special_ids().mask, 4);

  absl::StatusOr<Encoding> e = t->Encode("Hello, WORLD!", 8);
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_THAT(e->ids, ElementsAre(2, 5, 6, 7, 8, 3, 0, 0));
  EXPECT_THAT(e->attention_mask, ElementsAre(1, 1, 1, 1, 1, 1, 0, 0));

  // Truncated at the end; [SEP] stays last.
  e = t->Encode("Hello, WORLD!", 4);
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_THAT(e->ids, ElementsAre(2, 5, 6, 3));
  EXPECT_THAT(e->attention_mask, ElementsAre(1, 1, 1, 1));

  e = t->Encode("Hello", 2);
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_THAT(e->ids, ElementsAre(2, 3));

  EXPECT_THAT(
      t->Encode("Hello", 1),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("max_len")));
}

TEST_F(WordPieceTest, FactoryReadsConfigFiles) {
  WriteFile(dir_ / "tokenizer_config.json",
            R"({"do_lower_case": false, "model_max_length": 512})");
  auto t = MustCreate(CreateTokenizer("wordpiece", dir_.path()));
  EXPECT_THAT(Ids(*t, "hello Hello"), ElementsAre(5, 1));

  // special_tokens_map.json wins over tokenizer_config.json; an object's
  // "content" is the token.
  WriteFile(dir_ / "tokenizer_config.json",
            R"({"do_lower_case": true, "unk_token": "[PAD]"})");
  WriteFile(dir_ / "special_tokens_map.json",
            R"({"unk_token": {"content": "[MASK]", "lstrip": false},
                "pad_token": null})");
  t = MustCreate(CreateTokenizer("wordpiece", dir_.path()));
  EXPECT_THAT(Ids(*t, "Hello xyzzy"), ElementsAre(5, 4));
  EXPECT_EQ(t->special_ids().unk, 4);
  EXPECT_EQ(t->special_ids().pad, 0);
}

TEST_F(WordPieceTest, VocabLineEndings) {
  WriteFile(dir_ / "vocab.txt", "[PAD]\r\n[UNK]\r[CLS]\n[SEP]\nhello");
  auto t = Create();
  EXPECT_EQ(t->vocab_size(), 5);
  EXPECT_THAT(Ids(*t, "hello"), ElementsAre(4));
  EXPECT_EQ(t->special_ids().mask, -1);
}

TEST_F(WordPieceTest, BadVocabNamesFileAndLine) {
  WriteFile(dir_ / "vocab.txt", "[PAD]\n[UNK]\nbad\xff\n[CLS]\n[SEP]\n");
  EXPECT_THAT(CreateWordPieceTokenizer(dir_ / "vocab.txt"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("vocab.txt:3:"), HasSubstr("UTF-8"))));

  WriteFile(dir_ / "vocab.txt", "[PAD]\n[CLS]\n[SEP]\nhello\n");
  EXPECT_THAT(CreateWordPieceTokenizer(dir_ / "vocab.txt"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("vocab.txt"), HasSubstr("[UNK]"),
                             HasSubstr("unk_token"))));

  WriteFile(dir_ / "vocab.txt", "");
  EXPECT_THAT(CreateWordPieceTokenizer(dir_ / "vocab.txt"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("vocab.txt"), HasSubstr("empty"))));

  EXPECT_THAT(CreateWordPieceTokenizer(dir_ / "missing.txt"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("missing.txt")));
}

TEST_F(WordPieceTest, BadConfigNamesFileAndLine) {
  WriteFile(dir_ / "tokenizer_config.json",
            "{\n  \"do_lower_case\": true\n  \"x\": 1\n}");
  EXPECT_THAT(
      CreateTokenizer("wordpiece", dir_.path()),
      StatusIs(absl::StatusCode::kInvalidArgument,
               AllOf(HasSubstr("tokenizer_config.json"), HasSubstr("line 3"))));

  WriteFile(dir_ / "tokenizer_config.json",
            "{\n  \"unk_token\": \"[UNK]\",\n  \"do_lower_case\": \"yes\"\n}");
  EXPECT_THAT(CreateTokenizer("wordpiece", dir_.path()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("tokenizer_config.json:3:"),
                             HasSubstr("do_lower_case"))));

  WriteFile(dir_ / "tokenizer_config.json", "[]");
  EXPECT_THAT(CreateTokenizer("wordpiece", dir_.path()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("not a JSON object")));

  WriteFile(dir_ / "tokenizer_config.json", "{}");
  WriteFile(dir_ / "special_tokens_map.json", "{\n\"sep_token\": 3}");
  EXPECT_THAT(CreateTokenizer("wordpiece", dir_.path()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("special_tokens_map.json:2:"),
                             HasSubstr("sep_token"))));

  EXPECT_THAT(CreateTokenizer("unigram", dir_.path()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("unigram"), HasSubstr("wordpiece"))));
}

// BERT's BasicTokenizer written out in Python with unicodedata (upstream's
// own primitives): the whitespace-separated basic tokens of each string.
constexpr char kBertReference[] = R"PY(
import json, sys, unicodedata

def is_ws(c):
    return c in " \t\n\r" or unicodedata.category(c) == "Zs"

def is_ctrl(c):
    return c not in "\t\n\r" and unicodedata.category(c).startswith("C")

def is_punc(c):
    o = ord(c)
    if 33 <= o <= 47 or 58 <= o <= 64 or 91 <= o <= 96 or 123 <= o <= 126:
        return True
    return unicodedata.category(c).startswith("P")

CJK = [(0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF),
       (0x2A700, 0x2B73F), (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF),
       (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)]

def basic(text, lower):
    spaced = []
    for c in text:
        if ord(c) in (0, 0xFFFD) or is_ctrl(c):
            continue
        if is_ws(c):
            spaced.append(" ")
        elif any(a <= ord(c) <= b for a, b in CJK):
            spaced += [" ", c, " "]
        else:
            spaced.append(c)
    pieces = []
    for word in "".join(spaced).split():
        if lower:
            word = word.lower()
            word = "".join(c for c in unicodedata.normalize("NFD", word)
                           if unicodedata.category(c) != "Mn")
        current = ""
        for c in word:
            if is_punc(c):
                if current:
                    pieces.append(current)
                current = ""
                pieces.append(c)
            else:
                current += c
        if current:
            pieces.append(current)
    return " ".join(pieces).split()

texts = json.load(open(sys.argv[1], encoding="utf-8"))
lower = sys.argv[3] == "lower"
json.dump([basic(t, lower) for t in texts], open(sys.argv[2], "w"))
)PY";

const std::vector<std::string>& UnicodeSamples() {
  static const auto* samples = new std::vector<std::string>{
      "Héllo, Wörld! ¿Qué tal?",
      "ΟΔΟΣ ΟΔΟΣ. ΣΑΣ Σ ΌΣΟΣ'",
      "İstanbul ıi ǅemal ǈ",
      "Straße ÀÉÎÕÜ ÿ Ÿ",
      "naïve café e\u0301 a\u0308\u0323",
      "中文字符test 日本語のテキスト 한국어",
      "tab\there nbsp\u00a0here\u2028line\u2029para x\u0085y",
      "ctrl\x01\x1c\x1f"
      "char zero\u200bwidth\ufeffbom",
      "emoji 😀🎉 ok ∑∫≠ $100.50 ½ Ⅻ",
      "ﬁne ligature ㎏ ﬀ",
      "\"quoted\" 'single' «guillemets» — dash … ellipsis",
      "Ⓐ circled ǰ ẞ ﬃ",
      "مرحبا بالعالم שלום עולם",
      "Привет, МИР! ЁЖ",
      "हिन्दी भाषा ภาษาไทย",
      "under_score back\\slash a^b `tick` ~tilde",
      "\u3000ideographic space、句読点。",
      "Ǆ ǅ ǆ Ǉ Ａｂｃ１２３",
  };
  return *samples;
}

// Every token the reference gives is in the vocabulary as a whole word, so a
// basic-token difference shows up as [UNK] or other ids.
void CrossCheckBert(bool lower) {
  TempDir dir;
  WriteFile(dir / "texts.json", json(UnicodeSamples()).dump());
  WriteFile(dir / "bert_ref.py", kBertReference);
  ASSERT_EQ(RunCommand(absl::StrCat(kPython, " ", dir / "bert_ref.py", " ",
                                    dir / "texts.json", " ", dir / "ref.json",
                                    " ", lower ? "lower" : "cased"),
                       dir / "log"),
            0)
      << ReadText(dir / "log");
  const json reference = json::parse(ReadText(dir / "ref.json"));

  std::set<std::string> words;
  for (const auto& tokens : reference) {
    for (const auto& token : tokens) words.insert(token.get<std::string>());
  }
  std::vector<std::string> vocab = {"[PAD]", "[UNK]", "[CLS]", "[SEP]",
                                    "[MASK]"};
  vocab.insert(vocab.end(), words.begin(), words.end());
  WriteFile(dir / "vocab.txt", absl::StrCat(absl::StrJoin(vocab, "\n"), "\n"));
  json config = {{"do_lower_case", lower}};
  WriteFile(dir / "tokenizer_config.json", config.dump());
  auto t = MustCreate(CreateTokenizer("wordpiece", dir.path()));
  ASSERT_NE(t, nullptr);

  for (size_t i = 0; i < UnicodeSamples().size(); ++i) {
    std::vector<std::string> want;
    for (const auto& token : reference[i]) want.push_back(token);
    EXPECT_THAT(Tokens(*t, UnicodeSamples()[i]), ElementsAreArray(want))
        << "text " << i << ": " << UnicodeSamples()[i];
  }
}

TEST(WordPieceCrossCheck, MatchesPythonBasicTokenizerLowercased) {
  CrossCheckBert(/*lower=*/true);
}

TEST(WordPieceCrossCheck, MatchesPythonBasicTokenizerCased) {
  CrossCheckBert(/*lower=*/false);
}

// ------------------------------------------------------------ Byte-level BPE

// Byte-level characters: "Ġ" is the space byte, "Ã" and "©" the bytes of
// "é" (C3 A9). No entry for "z", so it is unk.
constexpr char kBpeVocab[] = R"({
  "<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3,
  "l": 5, "o": 6, "w": 7, "e": 8, "r": 9, "n": 10, "s": 11, "t": 12,
  "\u0120": 13, "d": 14, "'": 15, "i": 16, "!": 17,
  "lo": 18, "low": 19, "er": 20, "\u0120n": 21, "\u0120ne": 22, "we": 23,
  "es": 24, "st": 25, "on": 26, "'t": 27, "\u00c3": 28, "\u00a9": 29,
  "<mask>": 30
})";

constexpr char kBpeMerges[] = R"(#version: 0.2
l o
lo w
e r
Ġ n
Ġn e
w e
e s
s t
o n
' t
)";

class BpeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    WriteFile(dir_ / "vocab.json", kBpeVocab);
    WriteFile(dir_ / "merges.txt", kBpeMerges);
  }
  std::unique_ptr<Tokenizer> Create(const BpeOptions& options = {}) {
    return MustCreate(CreateByteLevelBpeTokenizer(
        dir_ / "vocab.json", dir_ / "merges.txt", options));
  }
  TempDir dir_;
};

TEST_F(BpeTest, MergesByRank) {
  auto t = Create();
  // "lower": l o w e r -> lo w e r -> low e r -> low er.
  // " newest": Ġ n e w e s t -> Ġn e w e s t -> Ġne w e s t -> (w e) ranks
  // before (e s): Ġne we s t -> Ġne we st.
  EXPECT_THAT(Tokens(*t, "lower newest"),
              ElementsAre("low", "er", "\u0120ne", "we", "st"));
  EXPECT_THAT(Ids(*t, "lower newest"), ElementsAre(19, 20, 22, 23, 25));
  EXPECT_EQ(t->vocab_size(), 31);
}

TEST_F(BpeTest, Contractions) {
  auto t = Create();
  // "don" then the contraction "'t".
  EXPECT_THAT(Tokens(*t, "don't"), ElementsAre("d", "on", "'t"));
  EXPECT_THAT(Ids(*t, "don't"), ElementsAre(14, 26, 27));
  // Only lowercase contractions: "'T" is punctuation then a letter.
  EXPECT_THAT(Ids(*t, "don'T"), ElementsAre(14, 26, 15, 3));
}

TEST_F(BpeTest, LeadingSpaceBelongsToTheWord) {
  auto t = Create();
  EXPECT_THAT(Ids(*t, " lower"), ElementsAre(13, 19, 20));
  // Of a run of spaces, the last goes with the next word.
  EXPECT_THAT(Ids(*t, "lower  newest"), ElementsAre(19, 20, 13, 22, 23, 25));
  // Trailing spaces stay one run.
  EXPECT_THAT(Ids(*t, "lower  "), ElementsAre(19, 20, 13, 13));
  BpeOptions prefix;
  prefix.add_prefix_space = true;
  EXPECT_THAT(Ids(*Create(prefix), "lower"), ElementsAre(13, 19, 20));
}

TEST_F(BpeTest, BytesWithoutMergesStayByteTokens) {
  auto t = Create();
  // "é" is two bytes with no merge between them; "!" splits off.
  EXPECT_THAT(Ids(*t, "lower\u00e9!"), ElementsAre(19, 20, 28, 29, 17));
  // A byte whose character is not in the vocabulary is <unk>.
  EXPECT_THAT(Ids(*t, "z"), ElementsAre(3));
}

TEST_F(BpeTest, SpecialTokensAndEncode) {
  auto t = Create();
  EXPECT_EQ(t->special_ids().cls, 0);
  EXPECT_EQ(t->special_ids().sep, 2);
  EXPECT_EQ(t->special_ids().pad, 1);
  EXPECT_EQ(t->special_ids().unk, 3);
  EXPECT_EQ(t->special_ids().mask, 30);
  EXPECT_THAT(Ids(*t, "<s>lower</s>"), ElementsAre(0, 19, 20, 2));
  // <mask> takes the space before it.
  EXPECT_THAT(Ids(*t, "lower <mask> lower"),
              ElementsAre(19, 20, 30, 13, 19, 20));
  EXPECT_THAT(Ids(*t, "lower \t\u3000<mask>"), ElementsAre(19, 20, 30));
  EXPECT_THAT(Ids(*t, " <mask>"), ElementsAre(30));

  absl::StatusOr<Encoding> e = t->Encode("lower newest", 10);
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_THAT(e->ids, ElementsAre(0, 19, 20, 22, 23, 25, 2, 1, 1, 1));
  EXPECT_THAT(e->attention_mask, ElementsAre(1, 1, 1, 1, 1, 1, 1, 0, 0, 0));
  e = t->Encode("lower newest", 6);
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_THAT(e->ids, ElementsAre(0, 19, 20, 22, 23, 2));
  EXPECT_THAT(e->attention_mask, ElementsAre(1, 1, 1, 1, 1, 1));
}

TEST_F(BpeTest, FactoryReadsDirectory) {
  WriteFile(dir_ / "tokenizer_config.json", R"({"add_prefix_space": true})");
  auto t = MustCreate(CreateTokenizer("bpe", dir_.path()));
  EXPECT_THAT(Ids(*t, "lower"), ElementsAre(13, 19, 20));
}

TEST_F(BpeTest, BadMergesNameFileAndLine) {
  WriteFile(dir_ / "merges.txt", "#version: 0.2\nl o\nlow\n");
  EXPECT_THAT(CreateTokenizer("bpe", dir_.path()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("merges.txt:3:"),
                             HasSubstr("two tokens"), HasSubstr("low"))));

  WriteFile(dir_ / "merges.txt", "#version: 0.2\nl o\n\nlo w\n");
  EXPECT_THAT(
      CreateTokenizer("bpe", dir_.path()),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("merges.txt:3:")));

  WriteFile(dir_ / "merges.txt", "l o\nx y\n");
  EXPECT_THAT(CreateTokenizer("bpe", dir_.path()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("merges.txt:2:"),
                             HasSubstr("\"x\" is not in"))));

  WriteFile(dir_ / "merges.txt", "l o\nlo lo\n");
  EXPECT_THAT(
      CreateTokenizer("bpe", dir_.path()),
      StatusIs(absl::StatusCode::kInvalidArgument,
               AllOf(HasSubstr("merges.txt:2:"), HasSubstr("\"lolo\""))));
}

TEST_F(BpeTest, BadVocabNamesFileAndLine) {
  WriteFile(dir_ / "vocab.json", "{\n  \"a\": 0,\n  \"b\" 1\n}");
  EXPECT_THAT(CreateTokenizer("bpe", dir_.path()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("vocab.json"), HasSubstr("line 3"))));

  WriteFile(dir_ / "vocab.json", "{\n  \"a\": 0,\n  \"b\": \"one\"\n}");
  EXPECT_THAT(CreateTokenizer("bpe", dir_.path()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("vocab.json:3:"), HasSubstr("\"b\""))));

  WriteFile(dir_ / "vocab.json", "{\n  \"a\": 0,\n  \"\\u0120b\": -4\n}");
  EXPECT_THAT(
      CreateTokenizer("bpe", dir_.path()),
      StatusIs(absl::StatusCode::kInvalidArgument,
               AllOf(HasSubstr("vocab.json:3:"), HasSubstr("non-negative"))));

  WriteFile(dir_ / "vocab.json", "{\n  \"a\": 0,\n  \"b\": 0\n}");
  EXPECT_THAT(CreateTokenizer("bpe", dir_.path()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("id 0 is given to both")));

  WriteFile(dir_ / "vocab.json",
            R"({"<s>": 0, "</s>": 2, "<unk>": 3, "l": 4, "o": 5, "lo": 6})");
  WriteFile(dir_ / "merges.txt", "l o\n");
  EXPECT_THAT(CreateTokenizer("bpe", dir_.path()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("vocab.json"), HasSubstr("<pad>"),
                             HasSubstr("pad_token"))));

  std::filesystem::remove(dir_ / "merges.txt");
  EXPECT_THAT(CreateTokenizer("bpe", dir_.path()),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("merges.txt")));
}

// GPT-2's byte-level BPE written out in Python with the `regex` module and
// upstream's pattern: learns merges from the texts, writes vocab.json and
// merges.txt, and the ids of each text.
constexpr char kBpeReference[] = R"PY(
import json, sys
import regex

PAT = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")

def byte_chars():
    keep = set(range(0x21, 0x7F)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return out

BYTES = byte_chars()

def words(text):
    return ["".join(BYTES[b] for b in w.encode("utf-8")) for w in PAT.findall(text)]

def merge(parts, pair):
    out, i = [], 0
    while i < len(parts):
        if i + 1 < len(parts) and (parts[i], parts[i + 1]) == pair:
            out.append(parts[i] + parts[i + 1])
            i += 2
        else:
            out.append(parts[i])
            i += 1
    return out

def learn(texts, count):
    freq = {}
    for t in texts:
        for w in words(t):
            freq[tuple(w)] = freq.get(tuple(w), 0) + 1
    merges = []
    for _ in range(count):
        pairs = {}
        for w, c in freq.items():
            for p in zip(w, w[1:]):
                pairs[p] = pairs.get(p, 0) + c
        if not pairs:
            break
        best = max(sorted(pairs), key=lambda p: pairs[p])
        merges.append(best)
        freq = {tuple(merge(list(w), best)): c for w, c in freq.items()}
    return merges

def bpe(word, ranks):
    parts = list(word)
    while len(parts) > 1:
        pairs = [p for p in zip(parts, parts[1:]) if p in ranks]
        if not pairs:
            break
        parts = merge(parts, min(pairs, key=lambda p: ranks[p]))
    return parts

texts = json.load(open(sys.argv[1], encoding="utf-8"))
out_dir = sys.argv[2]
merges = learn(texts, 300)
vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
for b in range(256):
    vocab.setdefault(BYTES[b], len(vocab))
for a, b in merges:
    vocab.setdefault(a + b, len(vocab))
vocab["<mask>"] = len(vocab)
json.dump(vocab, open(out_dir + "/vocab.json", "w"))
with open(out_dir + "/merges.txt", "w", encoding="utf-8") as f:
    f.write("#version: 0.2\n")
    for a, b in merges:
        f.write(a + " " + b + "\n")
ranks = {m: i for i, m in enumerate(merges)}
ids = [[vocab.get(p, 3) for w in words(t) for p in bpe(w, ranks)] for t in texts]
json.dump(ids, open(out_dir + "/ids.json", "w"))
)PY";

TEST(BpeCrossCheck, MatchesPythonRegexReference) {
  std::vector<std::string> texts = UnicodeSamples();
  const std::vector<std::string> more = {
      "Hello world",
      " Hello world",
      "lower newest widest lowest",
      "don't you're we've I'm they'll he'd it's",
      "DON'T SHOUT'S a's b'S",
      "  leading and trailing  ",
      "tabs\tand\nnewlines\r\n",
      "multiple   spaces \t\t here",
      "numbers 12345 and 3.14 x2 2x",
      "punctuation!!! ...?? (yes) [no] {maybe}",
      "\n\n\nhi  \n  there",
      "end with space ",
      "x\x1cy\x1fz \x0b\x0c",
      "a!\x1c?b \x1d"
      "c\x1e",
      "mixed123abc ABC'll",
      "'''' '' ' s",
      "emoji😀word 😀 😀😀"};
  texts.insert(texts.end(), more.begin(), more.end());
  TempDir dir;
  WriteFile(dir / "texts.json", json(texts).dump());
  WriteFile(dir / "bpe_ref.py", kBpeReference);
  ASSERT_EQ(RunCommand(absl::StrCat(kPython, " ", dir / "bpe_ref.py", " ",
                                    dir / "texts.json", " ", dir.path()),
                       dir / "log"),
            0)
      << ReadText(dir / "log");
  const json reference = json::parse(ReadText(dir / "ids.json"));
  auto t = MustCreate(CreateTokenizer("bpe", dir.path()));
  ASSERT_NE(t, nullptr);
  EXPECT_GT(ReadText(dir / "merges.txt").size(), 1000u);
  for (size_t i = 0; i < texts.size(); ++i) {
    EXPECT_THAT(Ids(*t, texts[i]),
                ElementsAreArray(reference[i].get<std::vector<int32_t>>()))
        << "text " << i << ": " << texts[i];
  }
}

// ------------------------------------------------------------- SentencePiece

class SentencePieceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir;
    // A few hundred lines over a small vocabulary, from a fixed LCG.
    const std::vector<std::string> words = {
        "federated", "learning", "layer",  "model",   "client", "server",
        "round",     "weights",  "update", "privacy", "budget", "token",
        "the",       "of",       "and",    "to",      "a",      "is",
        "données",   "modèle",   "über",   "straße",  "ñandú",  "日本",
        "学习",      "2024",     "3.5",    "!",       ",",      "?"};
    std::string corpus;
    uint32_t state = 12345;
    for (int line = 0; line < 400; ++line) {
      state = state * 1664525u + 1013904223u;
      const int n = 4 + static_cast<int>((state >> 16) % 10);
      for (int k = 0; k < n; ++k) {
        state = state * 1664525u + 1013904223u;
        absl::StrAppend(&corpus, k ? " " : "",
                        words[(state >> 16) % words.size()]);
      }
      corpus.push_back('\n');
    }
    WriteFile(*dir_ / "corpus.txt", corpus);
    const int rc =
        RunCommand(absl::StrCat("spm_train --input=", *dir_ / "corpus.txt",
                                " --model_prefix=", *dir_ / "sentencepiece.bpe",
                                " --model_type=bpe --vocab_size=120"
                                " --character_coverage=1.0 --num_threads=1"),
                   *dir_ / "train.log");
    ASSERT_EQ(rc, 0) << ReadText(*dir_ / "train.log");
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }

  static TempDir* dir_;
};

TempDir* SentencePieceTest::dir_ = nullptr;

// python3-sentencepiece: for each text, [ids, pieces].
constexpr char kSpmReference[] = R"PY(
import json, sys
import sentencepiece as spm
sp = spm.SentencePieceProcessor(model_file=sys.argv[1])
texts = json.load(open(sys.argv[2], encoding="utf-8"))
out = {"size": sp.get_piece_size(),
       "texts": [[sp.encode_as_ids(t), sp.encode_as_pieces(t)] for t in texts]}
json.dump(out, open(sys.argv[3], "w"))
)PY";

TEST_F(SentencePieceTest, MatchesPythonSentencePieceWithFairseqIds) {
  const std::vector<std::string> texts = {
      "federated learning of the model",
      "the client is to update weights and budget",
      "  extra   spaces   between words ",
      "données du modèle über straße",
      "ñandú 日本 学习 2024 3.5!",
      "Federated Learning",  // Capitals never seen in training.
      "zebra quagga ☃ ω",    // Unknown characters.
      "round, round? round!",
      "privacytoken serverclient",
      "a",
      "",
      "tab\tand\nnewline",
      "ｆｕｌｌｗｉｄｔｈ ＡＢＣ",  // NFKC folds these.
      "the the the the the the the the the the",
      "learning2024learning",
      "weights,budget,token",
      "über über über",
      "日本学习日本",
      "is a to of and",
      "3.5 2024 3.5 2024"};
  ASSERT_EQ(texts.size(), 20u);
  WriteFile(*dir_ / "texts.json", json(texts).dump());
  WriteFile(*dir_ / "spm_ref.py", kSpmReference);
  ASSERT_EQ(
      RunCommand(absl::StrCat(kPython, " ", *dir_ / "spm_ref.py", " ",
                              *dir_ / "sentencepiece.bpe.model", " ",
                              *dir_ / "texts.json", " ", *dir_ / "ref.json"),
                 *dir_ / "ref.log"),
      0)
      << ReadText(*dir_ / "ref.log");
  const json reference = json::parse(ReadText(*dir_ / "ref.json"));
  const int pieces = reference["size"].get<int>();

  auto t = MustCreate(CreateTokenizer("sentencepiece", dir_->path()));
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->vocab_size(), pieces + 2);
  bool saw_unk = false;
  for (size_t i = 0; i < texts.size(); ++i) {
    const auto spm_ids = reference["texts"][i][0].get<std::vector<int32_t>>();
    const auto spm_pieces =
        reference["texts"][i][1].get<std::vector<std::string>>();
    // fairseq: SentencePiece's unknown (0) is <unk> = 3, the rest move up 1.
    std::vector<int32_t> want;
    for (int32_t id : spm_ids) want.push_back(id == 0 ? 3 : id + 1);
    const std::vector<int32_t> got = Ids(*t, texts[i]);
    EXPECT_THAT(got, ElementsAreArray(want))
        << "text " << i << ": " << texts[i];
    for (size_t k = 0; k < got.size() && k < spm_pieces.size(); ++k) {
      if (got[k] == 3) {
        saw_unk = true;
        continue;
      }
      absl::StatusOr<std::string> piece = t->IdToToken(got[k]);
      ASSERT_TRUE(piece.ok()) << piece.status();
      EXPECT_EQ(*piece, spm_pieces[k]) << "text " << i;
    }
  }
  EXPECT_TRUE(saw_unk);
}

TEST_F(SentencePieceTest, XlmRobertaSpecialsAndEncode) {
  auto t = MustCreate(
      CreateSentencePieceTokenizer(*dir_ / "sentencepiece.bpe.model"));
  ASSERT_NE(t, nullptr);
  const int32_t size = t->vocab_size();
  EXPECT_EQ(t->special_ids().cls, 0);
  EXPECT_EQ(t->special_ids().pad, 1);
  EXPECT_EQ(t->special_ids().sep, 2);
  EXPECT_EQ(t->special_ids().unk, 3);
  EXPECT_EQ(t->special_ids().mask, size - 1);
  EXPECT_EQ(*t->IdToToken(0), "<s>");
  EXPECT_EQ(*t->IdToToken(1), "<pad>");
  EXPECT_EQ(*t->IdToToken(2), "</s>");
  EXPECT_EQ(*t->IdToToken(3), "<unk>");
  EXPECT_EQ(*t->IdToToken(size - 1), "<mask>");
  EXPECT_FALSE(t->IdToToken(size).ok());

  // "☃" is not in the model: the word-start piece, then <unk>.
  EXPECT_THAT(Tokens(*t, "☃"), ElementsAre("\u2581", "<unk>"));
  const std::vector<int32_t> model = Ids(*t, "model");
  ASSERT_FALSE(model.empty());
  EXPECT_GT(model[0], 3);

  // Special tokens in text; <mask> takes the space before it.
  std::vector<int32_t> want = {0};
  want.insert(want.end(), model.begin(), model.end());
  want.push_back(size - 1);
  want.push_back(2);
  EXPECT_THAT(Ids(*t, "<s>model <mask></s>"), ElementsAreArray(want));

  absl::StatusOr<Encoding> e =
      t->Encode("model", static_cast<int>(model.size()) + 4);
  ASSERT_TRUE(e.ok()) << e.status();
  want = {0};
  want.insert(want.end(), model.begin(), model.end());
  want.insert(want.end(), {2, 1, 1});
  EXPECT_THAT(e->ids, ElementsAreArray(want));
  EXPECT_EQ(e->attention_mask.size(), want.size());
  EXPECT_EQ(e->attention_mask[model.size() + 1], 1);
  EXPECT_EQ(e->attention_mask[model.size() + 2], 0);

  e = t->Encode("federated learning model", 3);
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->ids.front(), 0);
  EXPECT_EQ(e->ids.back(), 2);
  EXPECT_EQ(e->ids.size(), 3u);
}

TEST(SentencePieceFiles, BadModelIsRefused) {
  TempDir dir;
  WriteFile(dir / "sentencepiece.bpe.model", "not a protobuf");
  EXPECT_THAT(CreateTokenizer("sentencepiece", dir.path()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("sentencepiece.bpe.model")));
  EXPECT_THAT(
      CreateSentencePieceTokenizer(dir / "missing.model"),
      StatusIs(absl::StatusCode::kNotFound, HasSubstr("missing.model")));
}

// Debian's libsentencepiece exports its own protobuf 3.14; in a process that
// has loaded the system protobuf (every gRPC binary) it must still load and
// leave the process's protobuf alone.
TEST_F(SentencePieceTest, CoexistsWithTheSystemProtobuf) {
  google::protobuf::Struct before;
  (*before.mutable_fields())["round"].set_number_value(7);
  const std::string wire = before.SerializeAsString();

  auto t = MustCreate(CreateTokenizer("sentencepiece", dir_->path()));
  ASSERT_NE(t, nullptr);
  EXPECT_FALSE(Ids(*t, "federated learning").empty());

  google::protobuf::Struct after;
  ASSERT_TRUE(after.ParseFromString(wire));
  EXPECT_EQ(after.fields().at("round").number_value(), 7);
}

// ------------------------------------------------------------------ Unicode

TEST(TokenizerUnicode, PythonLowerAndStripAccents) {
  using internal::PythonLower;
  using internal::StripAccents;
  EXPECT_EQ(PythonLower(U"ΟΔΟΣ"), U"οδο\u03c2");
  EXPECT_EQ(PythonLower(U"ΟΔΟΣ."), U"οδο\u03c2.");
  EXPECT_EQ(PythonLower(U"Σ"), U"σ");
  EXPECT_EQ(PythonLower(U"İ"), U"i\u0307");
  EXPECT_EQ(StripAccents(U"Café naïve"), U"Cafe naive");
  EXPECT_EQ(StripAccents(U"한"), U"\u1112\u1161\u11ab");
  EXPECT_TRUE(internal::IsPythonSpace(0x1C));
  EXPECT_FALSE(internal::IsWhiteSpace(0x1C));
  EXPECT_TRUE(internal::IsWhiteSpace(0x85));
}

}  // namespace
}  // namespace layerfl::tokenizers

#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/config/config.h"
#include "common/data/federated_data.h"
#include "common/data/file.h"
#include "common/data/idx.h"
#include "common/data/partition.h"
#include "common/data/text.h"
#include "common/data/transforms.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace layerfl {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

constexpr char kFashionMnistDir[] = "/usr/share/datasets/fashion-mnist";

std::string TempPath(const std::string& name) {
  return (std::filesystem::path(::testing::TempDir()) / name).string();
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

std::string Gzip(const std::string& bytes) {
  z_stream zs{};
  EXPECT_EQ(deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 16 + MAX_WBITS,
                         8, Z_DEFAULT_STRATEGY),
            Z_OK);
  std::string out(deflateBound(&zs, bytes.size()), '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(bytes.data()));
  zs.avail_in = static_cast<uInt>(bytes.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&zs, Z_FINISH), Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

void AppendBe32(std::string& s, uint32_t v) {
  s.push_back(static_cast<char>(v >> 24));
  s.push_back(static_cast<char>(v >> 16));
  s.push_back(static_cast<char>(v >> 8));
  s.push_back(static_cast<char>(v));
}

std::string IdxImages(uint32_t count, uint32_t rows, uint32_t cols,
                      const std::vector<uint8_t>& pixels,
                      uint32_t magic = 0x00000803) {
  std::string s;
  AppendBe32(s, magic);
  AppendBe32(s, count);
  AppendBe32(s, rows);
  AppendBe32(s, cols);
  s.append(pixels.begin(), pixels.end());
  return s;
}

std::string IdxLabels(uint32_t count, const std::vector<uint8_t>& labels,
                      uint32_t magic = 0x00000801) {
  std::string s;
  AppendBe32(s, magic);
  AppendBe32(s, count);
  s.append(labels.begin(), labels.end());
  return s;
}

std::vector<uint8_t> Iota(int n) {
  std::vector<uint8_t> v(n);
  std::iota(v.begin(), v.end(), uint8_t{0});
  return v;
}

// Writes images/labels under `stem` and returns ReadIdx on them.
absl::StatusOr<ImageSet> WriteAndRead(const std::string& stem,
                                      const std::string& images,
                                      const std::string& labels) {
  WriteFile(TempPath(stem + "-images"), images);
  WriteFile(TempPath(stem + "-labels"), labels);
  return ReadIdx(TempPath(stem + "-images"), TempPath(stem + "-labels"));
}

// ---------------------------------------------------------------- IDX

TEST(IdxTest, ReadsPlainFiles) {
  absl::StatusOr<ImageSet> set =
      WriteAndRead("plain", IdxImages(2, 2, 3, Iota(12)), IdxLabels(2, {3, 7}));
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->size(), 2);
  EXPECT_EQ(set->rows, 2);
  EXPECT_EQ(set->cols, 3);
  EXPECT_THAT(set->pixels, ElementsAreArray(Iota(12)));
  EXPECT_THAT(set->labels, ElementsAre(3, 7));
  EXPECT_EQ(set->image(1)[0], 6);
}

TEST(IdxTest, ReadsGzipFilesDetectedByMagicNotName) {
  std::vector<uint8_t> pixels = {0, 255, 17, 200};
  absl::StatusOr<ImageSet> set = WriteAndRead(
      "gz", Gzip(IdxImages(1, 2, 2, pixels)), Gzip(IdxLabels(1, {9})));
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_THAT(set->pixels, ElementsAre(0, 255, 17, 200));
  EXPECT_THAT(set->labels, ElementsAre(9));
}

TEST(IdxTest, MissingFileIsNotFoundAndNamesPath) {
  std::string missing = TempPath("does-not-exist-images");
  WriteFile(TempPath("ok-labels"), IdxLabels(1, {0}));
  absl::StatusOr<ImageSet> set = ReadIdx(missing, TempPath("ok-labels"));
  EXPECT_EQ(set.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(set.status().message(), HasSubstr(missing));
}

TEST(IdxTest, WrongMagicNamesFileExpectedAndGot) {
  absl::StatusOr<ImageSet> set = WriteAndRead(
      "magic", IdxImages(1, 1, 1, {5}, 0x00000801), IdxLabels(1, {0}));
  EXPECT_EQ(set.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(set.status().message(), AllOf(HasSubstr(TempPath("magic-images")),
                                            HasSubstr("expected 0x00000803"),
                                            HasSubstr("got 0x00000801")));
}

TEST(IdxTest, WrongLabelMagicNamesLabelFile) {
  absl::StatusOr<ImageSet> set = WriteAndRead("lmagic", IdxImages(1, 1, 1, {5}),
                                              IdxLabels(1, {0}, 0x12345678));
  EXPECT_EQ(set.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(
      set.status().message(),
      AllOf(HasSubstr(TempPath("lmagic-labels")),
            HasSubstr("expected 0x00000801"), HasSubstr("got 0x12345678")));
}

TEST(IdxTest, CountMismatchNamesBothFilesAndCounts) {
  absl::StatusOr<ImageSet> set = WriteAndRead(
      "count", IdxImages(2, 1, 1, {1, 2}), IdxLabels(3, {0, 1, 2}));
  EXPECT_EQ(set.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(set.status().message(),
              AllOf(HasSubstr(TempPath("count-images")),
                    HasSubstr(TempPath("count-labels")), HasSubstr("2 images"),
                    HasSubstr("3 labels")));
}

TEST(IdxTest, TruncatedImagesSayExpectedAndGotBytes) {
  absl::StatusOr<ImageSet> set =
      WriteAndRead("trunc", IdxImages(2, 2, 2, Iota(7)), IdxLabels(2, {0, 1}));
  EXPECT_EQ(set.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(set.status().message(),
              AllOf(HasSubstr(TempPath("trunc-images")), HasSubstr("truncated"),
                    HasSubstr("expected 24 bytes"), HasSubstr("got 23")));
}

TEST(IdxTest, TruncatedHeaderIsDataLoss) {
  std::string header = IdxImages(1, 28, 28, {}).substr(0, 10);
  absl::StatusOr<ImageSet> set = WriteAndRead("hdr", header, IdxLabels(1, {0}));
  EXPECT_EQ(set.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(set.status().message(),
              AllOf(HasSubstr(TempPath("hdr-images")), HasSubstr("truncated"),
                    HasSubstr("got 10")));
}

TEST(IdxTest, TruncatedLabelsNameLabelFile) {
  absl::StatusOr<ImageSet> set = WriteAndRead(
      "ltrunc", IdxImages(3, 1, 1, {1, 2, 3}), IdxLabels(3, {0, 1}));
  EXPECT_EQ(set.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(set.status().message(),
              AllOf(HasSubstr(TempPath("ltrunc-labels")),
                    HasSubstr("expected 11 bytes"), HasSubstr("got 10")));
}

TEST(IdxTest, TrailingBytesAreDataLoss) {
  absl::StatusOr<ImageSet> set =
      WriteAndRead("trail", IdxImages(1, 1, 2, {1, 2, 3}), IdxLabels(1, {0}));
  EXPECT_EQ(set.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(set.status().message(), AllOf(HasSubstr(TempPath("trail-images")),
                                            HasSubstr("1 trailing bytes")));
}

TEST(IdxTest, TruncatedGzipIsDataLoss) {
  std::string gz = Gzip(IdxImages(4, 8, 8, Iota(256)));
  absl::StatusOr<ImageSet> set = WriteAndRead(
      "gztrunc", gz.substr(0, gz.size() / 2), IdxLabels(4, {0, 1, 2, 3}));
  EXPECT_EQ(set.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(set.status().message(),
              AllOf(HasSubstr(TempPath("gztrunc-images")), HasSubstr("gzip")));
}

TEST(IdxTest, ZeroOrAbsurdDimsAreInvalid) {
  absl::StatusOr<ImageSet> zero_rows =
      WriteAndRead("dims0", IdxImages(1, 0, 5, {}), IdxLabels(1, {0}));
  EXPECT_EQ(zero_rows.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(zero_rows.status().message(),
              AllOf(HasSubstr(TempPath("dims0-images")), HasSubstr("0x5")));

  absl::StatusOr<ImageSet> zero_count =
      WriteAndRead("count0", IdxImages(0, 2, 2, {}), IdxLabels(0, {}));
  EXPECT_EQ(zero_count.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(zero_count.status().message(), HasSubstr("image count"));

  absl::StatusOr<ImageSet> huge = WriteAndRead(
      "huge", IdxImages(1, 0x7fffffff, 0x7fffffff, {}), IdxLabels(1, {0}));
  EXPECT_EQ(huge.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(huge.status().message(), HasSubstr("2147483647x2147483647"));

  absl::StatusOr<ImageSet> negative =
      WriteAndRead("neg", IdxImages(0x80000000u, 2, 2, {}), IdxLabels(1, {0}));
  EXPECT_EQ(negative.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(IdxTest, SubsetCopiesInOrderAndRejectsBadIndex) {
  ImageSet set;
  set.rows = 1;
  set.cols = 2;
  set.pixels = {1, 2, 3, 4, 5, 6};
  set.labels = {7, 8, 9};
  absl::StatusOr<ImageSet> sub = Subset(set, {2, 0});
  ASSERT_TRUE(sub.ok()) << sub.status();
  EXPECT_THAT(sub->pixels, ElementsAre(5, 6, 1, 2));
  EXPECT_THAT(sub->labels, ElementsAre(9, 7));
  absl::StatusOr<ImageSet> bad = Subset(set, {0, 3});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("indices[1] = 3"));
}

ImageSet HandSet() {
  ImageSet set;
  set.rows = 2;
  set.cols = 3;
  set.pixels = {0, 1, 2, 3, 4, 5, 250, 251, 252, 253, 254, 255};
  set.labels = {9, 0};
  return set;
}

TEST(FileTest, WriteFileAtomicallyReplacesCreatesParentsAndNamesFailures) {
  const std::string dir = TempPath("atomic/a/b");
  std::filesystem::remove_all(TempPath("atomic"));
  const std::string path = dir + "/f.bin";
  ASSERT_TRUE(WriteFileAtomically(path, std::string("one\0two", 7)).ok());
  EXPECT_EQ(*ReadFileToString(path), std::string("one\0two", 7));
  ASSERT_TRUE(WriteFileAtomically(path, "3").ok());
  EXPECT_EQ(*ReadFileToString(path), "3");
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  // A parent that is a file: the error names the path, nothing is left.
  absl::Status s = WriteFileAtomically(path + "/below", "x");
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(s.message(), HasSubstr(path));
  EXPECT_EQ(*ReadFileToString(path), "3");
}

TEST(FileTest, FlagFilesNameTheFlagAndPath) {
  const std::string path = TempPath("flag-token.txt");
  WriteFile(path, "  s3cret \nsecond line\n");
  EXPECT_EQ(*ReadFlagFileLine("token_file", path), "s3cret");
  EXPECT_EQ(*ReadFlagFile("tls_ca", path), "  s3cret \nsecond line\n");
  WriteFile(path, "");
  absl::Status s = ReadFlagFile("tls_ca", path).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "--tls_ca: cannot read '" + path + "'");
  EXPECT_EQ(ReadFlagFileLine("token_file", path).status().message(),
            "--token_file: cannot read '" + path + "'");
  EXPECT_EQ(ReadFlagFileLine("token_file", path + ".missing").status().message(),
            "--token_file: cannot read '" + path + ".missing'");
}

TEST(IdxTest, WriteIdxBytesByHandAndReadBack) {
  const std::string images = TempPath("w-images"), labels = TempPath("w-labels");
  ASSERT_TRUE(WriteIdx(HandSet(), images, labels).ok());
  std::ifstream in(images, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)),
                          std::istreambuf_iterator<char>());
  EXPECT_EQ(bytes, IdxImages(2, 2, 3, HandSet().pixels));
  std::ifstream lin(labels, std::ios::binary);
  const std::string lbytes((std::istreambuf_iterator<char>(lin)),
                           std::istreambuf_iterator<char>());
  EXPECT_EQ(lbytes, IdxLabels(2, {9, 0}));
  absl::StatusOr<ImageSet> back = ReadIdx(images, labels);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->pixels, HandSet().pixels);
  EXPECT_EQ(back->labels, HandSet().labels);
  EXPECT_FALSE(std::filesystem::exists(images + ".tmp"));
}

TEST(IdxTest, WriteIdxRefusesWhatIdxCannotHold) {
  ImageSet big_label = HandSet();
  big_label.labels[1] = 300;
  absl::Status s = WriteIdx(big_label, TempPath("a"), TempPath("b"));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("label 300 of example 1"));
  ImageSet short_pixels = HandSet();
  short_pixels.pixels.pop_back();
  s = WriteIdx(short_pixels, TempPath("a"), TempPath("b"));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("11 pixel bytes for 2 images of 2x3"));
  // The images path lies below a regular file: cannot be written.
  WriteFile(TempPath("plain-file"), "x");
  s = WriteIdx(HandSet(), TempPath("plain-file") + "/x", TempPath("b"));
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(s.message(), HasSubstr(TempPath("plain-file")));
}

TEST(ClientImagesTest, WrittenSetLoadsBackAndIsCheckedAgainstTheModel) {
  const std::string dir = TempPath("client-images/client-004");
  std::filesystem::remove_all(TempPath("client-images"));
  ImageSet set;
  set.rows = set.cols = 28;
  set.pixels.assign(3 * 28 * 28, 7);
  set.labels = {1, 9, 0};
  ASSERT_TRUE(WriteClientImages(set, dir).ok());
  RunConfig c;
  absl::StatusOr<ImageSet> back = LoadClientImages(dir, c);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->labels, set.labels);
  EXPECT_EQ(back->pixels, set.pixels);

  c.model.num_classes = 5;  // label 9 no longer fits
  absl::Status s = LoadClientImages(dir, c).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("train-labels-idx1-ubyte"),
                                 HasSubstr("label 9 of example 1"),
                                 HasSubstr("model.num_classes")));
  c = RunConfig();
  c.model.image_size = 32;
  c.model.patch_size = 8;
  s = LoadClientImages(dir, c).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("train-images-idx3-ubyte"),
                                 HasSubstr("28x28"), HasSubstr("model.image_size")));
  s = LoadClientImages(TempPath("client-images/nobody"), RunConfig()).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("nobody/train-images-idx3-ubyte"));
}

TEST(FederatedTextTest, PartitionsEncodesWithOneVocabularyAndNamesBadLabels) {
  const std::string train = TempPath("fed_train.tsv"), test = TempPath("fed_test.tsv");
  WriteFile(train, "0\tred apple\n1\tblue sky\n0\tred red car\n1\tsky sky\n0\tapple\n1\tblue\n");
  WriteFile(test, "1\tblue apple\n0\tgreen\n");
  RunConfig c;
  c.model.kind = "text";
  c.model.num_classes = 2;
  c.model.vocab_size = 6;
  c.model.max_len = 3;
  c.pretrain.label_map.clear();
  c.data.dataset = "tsv";
  c.data.train_tsv = train;
  c.data.test_tsv = test;
  c.data.num_clients = 2;
  c.data.partition = "iid";
  ASSERT_TRUE(c.Validate().ok()) << c.Validate();
  absl::StatusOr<FederatedText> text = BuildFederatedText(c);
  ASSERT_TRUE(text.ok()) << text.status();
  // Words by count, ties alphabetical: red 3, sky 3, apple 2, blue 2, car 1.
  EXPECT_THAT(text->vocab, ElementsAre("<pad>", "<unk>", "red", "sky", "apple", "blue"));
  ASSERT_EQ(text->clients.size(), 2u);
  EXPECT_EQ(text->clients[0].size() + text->clients[1].size(), 6);
  EXPECT_EQ(text->clients[0].size(), 3);
  // Test set: "blue apple" -> blue 5, apple 4, pad; "green" -> unk, pad, pad.
  EXPECT_EQ(text->test.max_len, 3);
  EXPECT_THAT(text->test.tokens, ElementsAre(5, 4, 0, 1, 0, 0));
  EXPECT_THAT(text->test.labels, ElementsAre(1, 0));
  // Each client's examples are training lines, encoded with the same words.
  std::multiset<std::vector<int32_t>> all;
  for (const TextSet& t : text->clients) {
    for (int64_t i = 0; i < t.size(); ++i) {
      all.insert({t.tokens.begin() + i * 3, t.tokens.begin() + (i + 1) * 3});
    }
  }
  EXPECT_EQ(all.count({2, 4, 0}), 1u);  // red apple
  EXPECT_EQ(all.count({2, 2, 1}), 1u);  // red red car (car beyond the vocabulary)

  // A client's own copy of its lines and the run's vocabulary (what
  // layerfl-partition writes) encodes to exactly its partition.
  absl::StatusOr<TextShares> shares = BuildTextShares(c);
  ASSERT_TRUE(shares.ok()) << shares.status();
  EXPECT_EQ(shares->vocab, text->vocab);
  const std::string dir = TempPath("text-share/client-001");
  std::filesystem::remove_all(TempPath("text-share"));
  ASSERT_TRUE(WriteClientText(shares->clients[1], shares->vocab, dir).ok());
  absl::StatusOr<TextSet> own = LoadClientText(dir, c);
  ASSERT_TRUE(own.ok()) << own.status();
  EXPECT_EQ(own->tokens, text->clients[1].tokens);
  EXPECT_EQ(own->labels, text->clients[1].labels);
  // A text ending in '\r' (ReadTsv keeps all but the last one of a line)
  // comes back with the same tokens.
  const std::string cr_dir = TempPath("text-share/client-cr");
  ASSERT_TRUE(WriteClientText({{1, "red\r"}, {0, "\r"}}, shares->vocab, cr_dir).ok());
  absl::StatusOr<TextSet> cr = LoadClientText(cr_dir, c);
  ASSERT_TRUE(cr.ok()) << cr.status();
  EXPECT_THAT(cr->tokens, ElementsAre(2, 0, 0, 0, 0, 0));
  EXPECT_THAT(cr->labels, ElementsAre(1, 0));
  RunConfig small_vocab = c;
  small_vocab.model.vocab_size = 4;
  absl::Status bad = LoadClientText(dir, small_vocab).status();
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.message(), AllOf(HasSubstr(dir + "/vocab.txt"), HasSubstr("6 words"),
                                   HasSubstr("model.vocab_size")));
  WriteFile(dir + "/vocab.txt", "red\nsky\n");
  bad = LoadClientText(dir, c).status();
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.message(), HasSubstr(dir + "/vocab.txt"));
  std::filesystem::remove(dir + "/vocab.txt");
  EXPECT_EQ(LoadClientText(dir, c).status().code(), absl::StatusCode::kNotFound);

  RunConfig three = c;
  three.model.num_classes = 3;
  three.pretrain.label_map.clear();
  WriteFile(test, "1\tblue apple\n2\tgreen\n");
  EXPECT_TRUE(BuildFederatedText(three).ok());
  absl::Status s = BuildFederatedText(c).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(test), HasSubstr("example 2 has label 2"),
                                 HasSubstr("model.num_classes = 2")));
  c.data.num_clients = 7;  // more clients than training lines
  WriteFile(test, "1\tblue apple\n");
  s = BuildFederatedText(c).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr(train));
}

TEST(ClientImagesTest, PartitionClientIdIsZeroPadded) {
  EXPECT_EQ(PartitionClientId(7), "client-007");
  EXPECT_EQ(PartitionClientId(123), "client-123");
  EXPECT_EQ(PartitionClientId(1234), "client-1234");
}

TEST(FashionMnistTest, LoadsPlainNameFirstThenGz) {
  std::string dir = TempPath("fmnist-mixed");
  std::filesystem::create_directories(dir);
  WriteFile(dir + "/t10k-images-idx3-ubyte.gz", Gzip(IdxImages(1, 1, 1, {42})));
  WriteFile(dir + "/t10k-labels-idx1-ubyte", IdxLabels(1, {4}));
  absl::StatusOr<ImageSet> set = LoadFashionMnist(dir, /*train=*/false);
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_THAT(set->pixels, ElementsAre(42));
  EXPECT_THAT(set->labels, ElementsAre(4));

  absl::StatusOr<ImageSet> train = LoadFashionMnist(dir, /*train=*/true);
  EXPECT_EQ(train.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(train.status().message(),
              AllOf(HasSubstr("train-images-idx3-ubyte"),
                    HasSubstr("train-images-idx3-ubyte.gz")));
}

TEST(FashionMnistTest, LoadsRealDataset) {
  if (!std::filesystem::exists(kFashionMnistDir)) {
    GTEST_SKIP() << kFashionMnistDir << " not installed";
  }
  for (bool train : {true, false}) {
    absl::StatusOr<ImageSet> set = LoadFashionMnist(kFashionMnistDir, train);
    ASSERT_TRUE(set.ok()) << set.status();
    const int64_t n = train ? 60000 : 10000;
    EXPECT_EQ(set->size(), n);
    EXPECT_EQ(set->rows, 28);
    EXPECT_EQ(set->cols, 28);
    EXPECT_EQ(static_cast<int64_t>(set->pixels.size()), n * 28 * 28);
    std::vector<int64_t> per_class(10, 0);
    for (int label : set->labels) {
      ASSERT_GE(label, 0);
      ASSERT_LE(label, 9);
      ++per_class[label];
    }
    for (int64_t count : per_class) EXPECT_EQ(count, n / 10);
  }
}

// ---------------------------------------------------------------- text

TEST(TsvTest, ReadsGoodFile) {
  std::string path = TempPath("good.tsv");
  WriteFile(path, "0\tHello world\n\n12\ttab\tinside\r\n3\tlast line");
  absl::StatusOr<std::vector<LabeledText>> rows = ReadTsv(path);
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 3u);
  EXPECT_EQ((*rows)[0].label, 0);
  EXPECT_EQ((*rows)[0].text, "Hello world");
  EXPECT_EQ((*rows)[1].label, 12);
  EXPECT_EQ((*rows)[1].text, "tab\tinside");
  EXPECT_EQ((*rows)[2].label, 3);
  EXPECT_EQ((*rows)[2].text, "last line");
}

TEST(TsvTest, ReadsGzipFile) {
  std::string path = TempPath("good.tsv.gz");
  WriteFile(path, Gzip("1\tcompressed\n"));
  absl::StatusOr<std::vector<LabeledText>> rows = ReadTsv(path);
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 1u);
  EXPECT_EQ((*rows)[0].text, "compressed");
}

struct BadTsvCase {
  std::string name;
  std::string contents;
  std::string expected;  // Substring of the error after "path:line".
};

class BadTsvTest : public ::testing::TestWithParam<BadTsvCase> {};

TEST_P(BadTsvTest, NamesPathLineAndProblem) {
  const BadTsvCase& c = GetParam();
  std::string path = TempPath("bad-" + c.name + ".tsv");
  WriteFile(path, c.contents);
  absl::StatusOr<std::vector<LabeledText>> rows = ReadTsv(path);
  EXPECT_EQ(rows.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(rows.status().message(),
              AllOf(HasSubstr(path + ":3"), HasSubstr(c.expected)));
}

INSTANTIATE_TEST_SUITE_P(
    Malformed, BadTsvTest,
    ::testing::Values(
        BadTsvCase{"missing_tab", "0\tok\n\n1 no tab\n", "missing tab"},
        BadTsvCase{"non_integer", "0\tok\n1\tok\nabc\ttext\n",
                   "non-negative integer, got \"abc\""},
        BadTsvCase{"float", "0\tok\n1\tok\n1.5\ttext\n",
                   "non-negative integer, got \"1.5\""},
        BadTsvCase{"negative", "0\tok\n1\tok\n-2\ttext\n",
                   "non-negative, got -2"},
        BadTsvCase{"too_large", "0\tok\n1\tok\n99999999999\ttext\n",
                   "larger than"},
        BadTsvCase{"empty_text", "0\tok\n1\tok\n4\t\r\n", "empty text"}),
    [](const ::testing::TestParamInfo<BadTsvCase>& param) {
      return param.param.name;
    });

TEST(TsvTest, MissingAndEmptyFiles) {
  std::string missing = TempPath("missing.tsv");
  EXPECT_EQ(ReadTsv(missing).status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(ReadTsv(missing).status().message(), HasSubstr(missing));
  std::string empty = TempPath("empty.tsv");
  WriteFile(empty, "\n\n");
  EXPECT_THAT(ReadTsv(empty).status().message(),
              AllOf(HasSubstr(empty), HasSubstr("no examples")));
}

TEST(TokenizerTest, SplitsLowercasesOnNonAlphanumeric) {
  EXPECT_THAT(Tokenizer::Split("Hello, WORLD! it's 42nd--st."),
              ElementsAre("hello", "world", "it", "s", "42nd", "st"));
  EXPECT_THAT(Tokenizer::Split("  \t"), ElementsAre());
}

TEST(TokenizerTest, ExactIdsOnHandExample) {
  // Counts: the 3, cat 2, sat 2, a 1, dog 1, end 1 -> ties alphabetical.
  std::vector<LabeledText> corpus = {
      {0, "The cat sat."}, {1, "the dog sat!"}, {0, "A cat? The END"}};
  absl::StatusOr<Tokenizer> tok = Tokenizer::Build(corpus, 6);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ(tok->vocab_size(), 6);
  EXPECT_THAT(tok->vocab(),
              ElementsAre("<pad>", "<unk>", "the", "cat", "sat", "a"));
  EXPECT_THAT(tok->Encode("The dog, the CAT!", 6),
              ElementsAre(2, 1, 2, 3, 0, 0));
  EXPECT_THAT(tok->Encode("The dog, the CAT!", 2), ElementsAre(2, 1));
  EXPECT_THAT(tok->Encode("", 3), ElementsAre(0, 0, 0));
  EXPECT_THAT(tok->Encode("sat", 0), ElementsAre());

  absl::StatusOr<Tokenizer> all = Tokenizer::Build(corpus, 100);
  ASSERT_TRUE(all.ok());
  EXPECT_THAT(all->vocab(), ElementsAre("<pad>", "<unk>", "the", "cat", "sat",
                                        "a", "dog", "end"));

  EXPECT_EQ(Tokenizer::Build(corpus, 1).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(TokenizerTest, FromVocabRoundTripsAndValidates) {
  std::vector<LabeledText> corpus = {{0, "b a b"}};
  absl::StatusOr<Tokenizer> tok = Tokenizer::Build(corpus, 10);
  ASSERT_TRUE(tok.ok());
  absl::StatusOr<Tokenizer> copy = Tokenizer::FromVocab(tok->vocab());
  ASSERT_TRUE(copy.ok()) << copy.status();
  EXPECT_EQ(copy->Encode("a b c", 4), tok->Encode("a b c", 4));
  EXPECT_FALSE(Tokenizer::FromVocab({"<unk>", "<pad>"}).ok());
  EXPECT_THAT(
      Tokenizer::FromVocab({"<pad>", "<unk>", "x", "x"}).status().message(),
      HasSubstr("duplicates"));
  EXPECT_FALSE(Tokenizer::FromVocab({"<pad>", "<unk>", "Two words"}).ok());
}

TEST(TokenizerTest, EncodeAllConcatenatesFixedLengthRows) {
  std::vector<LabeledText> corpus = {{2, "x y"}, {5, "y y y y"}};
  absl::StatusOr<Tokenizer> tok = Tokenizer::Build(corpus, 10);
  ASSERT_TRUE(tok.ok());
  ASSERT_THAT(tok->vocab(), ElementsAre("<pad>", "<unk>", "y", "x"));
  TextSet set = EncodeAll(*tok, corpus, 3);
  EXPECT_EQ(set.size(), 2);
  EXPECT_EQ(set.max_len, 3);
  EXPECT_THAT(set.tokens, ElementsAre(3, 2, 0, 2, 2, 2));
  EXPECT_THAT(set.labels, ElementsAre(2, 5));
}

// ---------------------------------------------------------------- partition

void ExpectDisjointCover(const Partition& p, int64_t n) {
  std::vector<int> seen(n, 0);
  for (const auto& client : p.clients) {
    EXPECT_TRUE(std::is_sorted(client.begin(), client.end()));
    for (int64_t i : client) {
      ASSERT_GE(i, 0);
      ASSERT_LT(i, n);
      ++seen[i];
    }
  }
  for (int64_t i = 0; i < n; ++i) EXPECT_EQ(seen[i], 1) << "index " << i;
}

TEST(PartitionTest, IidSizesBalancedAndDisjointCover) {
  absl::StatusOr<Partition> p = PartitionIid(103, 10, 7);
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->clients.size(), 10u);
  EXPECT_TRUE(p->domain.empty());
  size_t lo = 1000, hi = 0, total = 0;
  for (const auto& c : p->clients) {
    lo = std::min(lo, c.size());
    hi = std::max(hi, c.size());
    total += c.size();
  }
  EXPECT_EQ(total, 103u);
  EXPECT_LE(hi - lo, 1u);
  ExpectDisjointCover(*p, 103);
  // Shuffled: client 0 is not simply the first chunk.
  std::vector<int64_t> first(p->clients[0].size());
  std::iota(first.begin(), first.end(), int64_t{0});
  EXPECT_NE(p->clients[0], first);
  EXPECT_EQ(PartitionIid(103, 10, 7)->clients, p->clients);
  EXPECT_NE(PartitionIid(103, 10, 8)->clients, p->clients);
}

TEST(PartitionTest, IidErrorsNameArgument) {
  EXPECT_THAT(PartitionIid(10, 0, 1).status().message(),
              HasSubstr("num_clients must be >= 1, got 0"));
  EXPECT_THAT(PartitionIid(3, 4, 1).status().message(),
              AllOf(HasSubstr("n = 3"), HasSubstr("num_clients = 4")));
}

std::vector<int> SyntheticLabels(int n, int num_classes) {
  std::vector<int> labels(n);
  for (int i = 0; i < n; ++i) labels[i] = i % num_classes;
  return labels;
}

double MeanEntropy(const std::vector<int>& labels, const Partition& p,
                   int num_classes) {
  double sum = 0.0;
  for (const auto& client : p.clients) {
    absl::StatusOr<double> h = LabelEntropy(labels, client, num_classes);
    EXPECT_TRUE(h.ok()) << h.status();
    sum += h.value_or(0.0);
  }
  return sum / static_cast<double>(p.clients.size());
}

TEST(PartitionTest, DirichletCoversReproducibleAndSkewed) {
  std::vector<int> labels = SyntheticLabels(10000, 10);
  absl::StatusOr<Partition> skewed = PartitionDirichlet(labels, 10, 20, 0.1, 1);
  absl::StatusOr<Partition> flat = PartitionDirichlet(labels, 10, 20, 100, 1);
  ASSERT_TRUE(skewed.ok()) << skewed.status();
  ASSERT_TRUE(flat.ok()) << flat.status();
  ExpectDisjointCover(*skewed, 10000);
  ExpectDisjointCover(*flat, 10000);
  for (const auto& c : skewed->clients) EXPECT_FALSE(c.empty());

  EXPECT_EQ(PartitionDirichlet(labels, 10, 20, 0.1, 1)->clients,
            skewed->clients);
  EXPECT_NE(PartitionDirichlet(labels, 10, 20, 0.1, 2)->clients,
            skewed->clients);

  double h_skewed = MeanEntropy(labels, *skewed, 10);
  double h_flat = MeanEntropy(labels, *flat, 10);
  EXPECT_LT(h_skewed, 0.6 * h_flat);
  EXPECT_GT(h_flat, 0.95 * std::log(10.0));
}

TEST(PartitionTest, DirichletGivesEveryClientAnExample) {
  // Tiny alpha puts each class on ~one client; 50 clients, 3 classes.
  std::vector<int> labels = SyntheticLabels(60, 3);
  for (uint64_t seed = 0; seed < 20; ++seed) {
    absl::StatusOr<Partition> p = PartitionDirichlet(labels, 3, 50, 1e-3, seed);
    ASSERT_TRUE(p.ok()) << p.status();
    ExpectDisjointCover(*p, 60);
    for (const auto& c : p->clients) EXPECT_FALSE(c.empty());
  }
  // Exactly as many examples as clients: one each.
  absl::StatusOr<Partition> one = PartitionDirichlet(labels, 3, 60, 0.5, 3);
  ASSERT_TRUE(one.ok());
  for (const auto& c : one->clients) EXPECT_EQ(c.size(), 1u);
}

TEST(PartitionTest, DirichletErrorsNameArgument) {
  std::vector<int> labels = {0, 1, 2, 1};
  EXPECT_THAT(PartitionDirichlet(labels, 3, 2, 0.0, 1).status().message(),
              HasSubstr("alpha must be"));
  EXPECT_THAT(PartitionDirichlet(labels, 3, 2, -1, 1).status().message(),
              HasSubstr("alpha must be"));
  EXPECT_THAT(PartitionDirichlet(labels, 3, 0, 1, 1).status().message(),
              HasSubstr("num_clients"));
  EXPECT_THAT(PartitionDirichlet(labels, 3, 5, 1, 1).status().message(),
              HasSubstr("n = 4"));
  EXPECT_THAT(PartitionDirichlet(labels, 2, 2, 1, 1).status().message(),
              HasSubstr("labels[2] = 2 is outside [0, 2)"));
  EXPECT_THAT(PartitionDirichlet(labels, 0, 2, 1, 1).status().message(),
              HasSubstr("num_classes"));
}

TEST(PartitionTest, FeatureShiftRoundRobinDomains) {
  absl::StatusOr<Partition> p = PartitionFeatureShift(50, 7, 3, 5);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_THAT(p->domain, ElementsAre(0, 1, 2, 0, 1, 2, 0));
  ExpectDisjointCover(*p, 50);
  EXPECT_EQ(p->clients, PartitionIid(50, 7, 5)->clients);
  EXPECT_THAT(PartitionFeatureShift(50, 7, 0, 5).status().message(),
              HasSubstr("num_domains"));
}

TEST(PartitionTest, SplitHoldoutDisjointAndRounded) {
  auto split = SplitHoldout(10, 0.25, 3);  // round(2.5) = 3
  ASSERT_TRUE(split.ok()) << split.status();
  const auto& [held, rest] = *split;
  EXPECT_EQ(held.size(), 3u);
  EXPECT_EQ(rest.size(), 7u);
  EXPECT_TRUE(std::is_sorted(held.begin(), held.end()));
  EXPECT_TRUE(std::is_sorted(rest.begin(), rest.end()));
  std::set<int64_t> all(held.begin(), held.end());
  all.insert(rest.begin(), rest.end());
  EXPECT_EQ(all.size(), 10u);
  EXPECT_EQ(*all.begin(), 0);
  EXPECT_EQ(*all.rbegin(), 9);
  EXPECT_EQ(SplitHoldout(10, 0.25, 3)->first, held);
  EXPECT_TRUE(SplitHoldout(10, 0.0, 3)->first.empty());
  EXPECT_THAT(SplitHoldout(10, 1.0, 3).status().message(),
              HasSubstr("fraction must be in [0, 1), got 1"));
  EXPECT_THAT(SplitHoldout(10, -0.1, 3).status().message(),
              HasSubstr("fraction"));
}

TEST(PartitionTest, LabelEntropyHandValues) {
  std::vector<int> labels = {0, 0, 1, 1, 2};
  EXPECT_DOUBLE_EQ(LabelEntropy(labels, {0, 1}, 3).value(), 0.0);
  EXPECT_DOUBLE_EQ(LabelEntropy(labels, {0, 2}, 3).value(), std::log(2.0));
  EXPECT_DOUBLE_EQ(LabelEntropy(labels, {}, 3).value(), 0.0);
  EXPECT_FALSE(LabelEntropy(labels, {5}, 3).ok());
  EXPECT_FALSE(LabelEntropy(labels, {4}, 2).ok());
}

// ---------------------------------------------------------------- transforms

std::vector<uint8_t> Apply(Domain d, std::vector<uint8_t> image, int rows,
                           int cols, uint64_t seed = 0) {
  absl::Status s = ApplyDomain(d, rows, cols, image.data(), seed);
  EXPECT_TRUE(s.ok()) << s;
  return image;
}

TEST(TransformsTest, NamesRoundTrip) {
  for (Domain d : kAllDomains) {
    absl::StatusOr<Domain> parsed = ParseDomain(DomainName(d));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, d);
  }
  absl::StatusOr<Domain> bad = ParseDomain("sepia");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(),
              AllOf(HasSubstr("sepia"),
                    HasSubstr("identity, rotate90, rotate180, invert, blur, "
                              "noise, contrast")));
}

TEST(TransformsTest, GeometricAndPointwiseOnHandExample) {
  // 1 2 3
  // 4 5 6
  // 7 8 9
  std::vector<uint8_t> img = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  EXPECT_THAT(Apply(Domain::kIdentity, img, 3, 3), ElementsAreArray(img));
  // Clockwise: the left column, read bottom-up, becomes the top row.
  EXPECT_THAT(Apply(Domain::kRotate90, img, 3, 3),
              ElementsAre(7, 4, 1, 8, 5, 2, 9, 6, 3));
  EXPECT_THAT(Apply(Domain::kRotate180, img, 3, 3),
              ElementsAre(9, 8, 7, 6, 5, 4, 3, 2, 1));
  EXPECT_THAT(Apply(Domain::kInvert, img, 3, 3),
              ElementsAre(254, 253, 252, 251, 250, 249, 248, 247, 246));
  EXPECT_THAT(
      Apply(Domain::kContrast, {0, 1, 127, 128, 129, 255, 254, 100, 200}, 3, 3),
      ElementsAre(64, 64, 127, 128, 129, 192, 191, 114, 164));
  EXPECT_THAT(Apply(Domain::kRotate180, {1, 2, 3, 4, 5, 6}, 2, 3),
              ElementsAre(6, 5, 4, 3, 2, 1));
}

TEST(TransformsTest, BlurByHand) {
  // 10 20 30
  // 40 50 60
  // 70 80 90
  // Corner (0,0) with clamping sees 10 x4, 20 x2, 40 x2, 50 -> 210 / 9 = 23.3.
  // (1,2): 20+30+30 + 50+60+60 + 80+90+90 = 510 / 9 = 56.7 -> 57.
  std::vector<uint8_t> img = {10, 20, 30, 40, 50, 60, 70, 80, 90};
  EXPECT_THAT(Apply(Domain::kBlur, img, 3, 3),
              ElementsAre(23, 30, 37, 43, 50, 57, 63, 70, 77));
  EXPECT_THAT(Apply(Domain::kBlur, {9}, 1, 1), ElementsAre(9));
}

TEST(TransformsTest, NoiseDeterministicBoundedAndClamped) {
  std::vector<uint8_t> mid(64, 128);
  std::vector<uint8_t> a = Apply(Domain::kNoise, mid, 8, 8, 11);
  EXPECT_EQ(a, Apply(Domain::kNoise, mid, 8, 8, 11));
  EXPECT_NE(a, Apply(Domain::kNoise, mid, 8, 8, 12));
  EXPECT_NE(a, mid);
  for (uint8_t p : a) {
    EXPECT_GE(p, 128 - 32);
    EXPECT_LE(p, 128 + 32);
  }
  for (uint8_t p :
       Apply(Domain::kNoise, std::vector<uint8_t>(64, 0), 8, 8, 1)) {
    EXPECT_LE(p, 32);
  }
  for (uint8_t p :
       Apply(Domain::kNoise, std::vector<uint8_t>(64, 255), 8, 8, 1)) {
    EXPECT_GE(p, 255 - 32);
  }
}

TEST(TransformsTest, RejectsBadShapes) {
  std::vector<uint8_t> img(6, 1);
  absl::Status s = ApplyDomain(Domain::kRotate90, 2, 3, img.data(), 0);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("rotate90"), HasSubstr("2x3")));
  EXPECT_THAT(img, ElementsAre(1, 1, 1, 1, 1, 1));
  EXPECT_FALSE(ApplyDomain(Domain::kInvert, 0, 3, img.data(), 0).ok());
}

TEST(TransformsTest, ApplyToAllUsesPerImageSeeds) {
  ImageSet set;
  set.rows = 2;
  set.cols = 2;
  set.pixels.assign(3 * 4, 100);
  set.labels = {0, 1, 2};
  absl::StatusOr<ImageSet> noisy = ApplyDomainToAll(set, Domain::kNoise, 5);
  ASSERT_TRUE(noisy.ok()) << noisy.status();
  EXPECT_THAT(noisy->labels, ElementsAre(0, 1, 2));
  std::vector<uint8_t> img0(noisy->image(0), noisy->image(0) + 4);
  std::vector<uint8_t> img1(noisy->image(1), noisy->image(1) + 4);
  EXPECT_NE(img0, img1);
  EXPECT_EQ(ApplyDomainToAll(set, Domain::kNoise, 5)->pixels, noisy->pixels);

  absl::StatusOr<ImageSet> inverted = ApplyDomainToAll(set, Domain::kInvert, 0);
  ASSERT_TRUE(inverted.ok());
  EXPECT_EQ(inverted->pixels, std::vector<uint8_t>(12, 155));

  set.cols = 3;
  set.pixels.assign(3 * 6, 0);
  EXPECT_FALSE(ApplyDomainToAll(set, Domain::kRotate90, 0).ok());
}

}  // namespace
}  // namespace layerfl

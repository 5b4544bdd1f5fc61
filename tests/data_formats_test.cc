// Data as teams keep it: JPEG/PNG image folders, JSONL and CSV text with
// named fields, label maps, and the by-group partition.
// clang-format off
#include <cstdio>
#include <jpeglib.h>
// clang-format on
#include <png.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "common/config/config.h"
#include "common/data/federated_data.h"
#include "common/data/image.h"
#include "common/data/image_folder.h"
#include "common/data/partition.h"
#include "common/data/records.h"
#include "common/data/rng.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace layerfl {
namespace {

namespace fs = std::filesystem;

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string TempPath(const std::string& name) {
  return (fs::path(::testing::TempDir()) / "data_formats" / name).string();
}

// A fresh empty directory under the test's temporary directory.
std::string FreshDir(const std::string& name) {
  const std::string dir = TempPath(name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

void WriteFile(const std::string& path, const std::string& bytes) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Writes a PNG of `rows` x `cols` pixels, `interleaved` holding
// rows * cols * channels samples; color_type as libpng's.
void WritePng(const std::string& path, int rows, int cols, int color_type,
              const std::vector<uint8_t>& interleaved) {
  fs::create_directories(fs::path(path).parent_path());
  FILE* f = std::fopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr) << path;
  png_structp png =
      png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  png_init_io(png, f);
  png_set_IHDR(png, info, cols, rows, 8, color_type, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  const int channels = png_get_channels(png, info);
  for (int r = 0; r < rows; ++r) {
    png_write_row(png, interleaved.data() + static_cast<size_t>(r) * cols * channels);
  }
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  std::fclose(f);
}

// Writes a baseline JPEG (quality 95) of `components` 1 (grey) or 3 (RGB).
void WriteJpeg(const std::string& path, int rows, int cols, int components,
               const std::vector<uint8_t>& interleaved) {
  fs::create_directories(fs::path(path).parent_path());
  FILE* f = std::fopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr) << path;
  jpeg_compress_struct cinfo;
  jpeg_error_mgr err;
  cinfo.err = jpeg_std_error(&err);
  jpeg_create_compress(&cinfo);
  jpeg_stdio_dest(&cinfo, f);
  cinfo.image_width = cols;
  cinfo.image_height = rows;
  cinfo.input_components = components;
  cinfo.in_color_space = components == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, 95, TRUE);
  jpeg_start_compress(&cinfo, TRUE);
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = const_cast<uint8_t*>(interleaved.data()) +
                   static_cast<size_t>(cinfo.next_scanline) * cols * components;
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  std::fclose(f);
}

Image Row(std::vector<uint8_t> values) {
  Image im;
  im.channels = 1;
  im.rows = 1;
  im.cols = static_cast<int>(values.size());
  im.pixels = std::move(values);
  return im;
}

// ---------------------------------------------------------------- decoding

TEST(DecodeTest, PngRgbGreyAndRgbaDecodeExactlyToRgbPlanes) {
  const std::string dir = FreshDir("decode");
  // 2 rows x 3 cols RGB, interleaved.
  WritePng(dir + "/rgb.png", 2, 3, PNG_COLOR_TYPE_RGB,
           {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18});
  absl::StatusOr<Image> rgb = DecodeImageFile(dir + "/rgb.png");
  ASSERT_TRUE(rgb.ok()) << rgb.status();
  EXPECT_EQ(rgb->channels, 3);
  EXPECT_EQ(rgb->rows, 2);
  EXPECT_EQ(rgb->cols, 3);
  // CHW: the R plane, then G, then B.
  EXPECT_THAT(rgb->pixels, ElementsAre(1, 4, 7, 10, 13, 16,   //
                                       2, 5, 8, 11, 14, 17,   //
                                       3, 6, 9, 12, 15, 18));
  WritePng(dir + "/grey.png", 1, 2, PNG_COLOR_TYPE_GRAY, {9, 250});
  absl::StatusOr<Image> grey = DecodeImageFile(dir + "/grey.png");
  ASSERT_TRUE(grey.ok()) << grey.status();
  EXPECT_THAT(grey->pixels, ElementsAre(9, 250, 9, 250, 9, 250));
  // Alpha is dropped, not composited: a transparent pixel keeps its colour.
  WritePng(dir + "/rgba.png", 1, 2, PNG_COLOR_TYPE_RGBA,
           {200, 100, 50, 0, 1, 2, 3, 255});
  absl::StatusOr<Image> rgba = DecodeImageFile(dir + "/rgba.png");
  ASSERT_TRUE(rgba.ok()) << rgba.status();
  EXPECT_THAT(rgba->pixels, ElementsAre(200, 1, 100, 2, 50, 3));
  WritePng(dir + "/grey_alpha.png", 1, 1, PNG_COLOR_TYPE_GRAY_ALPHA, {77, 3});
  absl::StatusOr<Image> ga = DecodeImageFile(dir + "/grey_alpha.png");
  ASSERT_TRUE(ga.ok()) << ga.status();
  EXPECT_THAT(ga->pixels, ElementsAre(77, 77, 77));
}

TEST(DecodeTest, JpegDecodesDeterministically) {
  const std::string dir = FreshDir("decode_jpeg");
  // A flat grey 8x8 block at 128 has only a zero DC coefficient: exact.
  WriteJpeg(dir + "/grey.jpg", 8, 8, 1, std::vector<uint8_t>(64, 128));
  absl::StatusOr<Image> grey = DecodeImageFile(dir + "/grey.jpg");
  ASSERT_TRUE(grey.ok()) << grey.status();
  EXPECT_EQ(grey->channels, 3);
  EXPECT_EQ(grey->pixels, std::vector<uint8_t>(3 * 64, 128));
  // A flat colour comes back within JPEG's rounding; twice the same bytes.
  std::vector<uint8_t> rgb;
  for (int i = 0; i < 16 * 16; ++i) rgb.insert(rgb.end(), {200, 100, 50});
  WriteJpeg(dir + "/rgb.jpg", 16, 16, 3, rgb);
  absl::StatusOr<Image> a = DecodeImageFile(dir + "/rgb.jpg");
  absl::StatusOr<Image> b = DecodeImageFile(dir + "/rgb.jpg");
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(a->pixels, b->pixels);
  const int expected[3] = {200, 100, 50};
  for (int c = 0; c < 3; ++c) {
    for (int i = 0; i < 256; ++i) {
      EXPECT_NEAR(a->pixels[c * 256 + i], expected[c], 2) << c << " " << i;
    }
  }
}

TEST(DecodeTest, UndecodableFilesAreErrorsNamingTheFile) {
  const std::string dir = FreshDir("decode_bad");
  WriteFile(dir + "/text.png", "this is not an image");
  absl::Status s = DecodeImageFile(dir + "/text.png").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(dir + "/text.png"),
                                 HasSubstr("not a JPEG or PNG")));
  // Truncated files: a JPEG cut in half, a PNG without its end.
  std::vector<uint8_t> noise(32 * 32 * 3);
  std::mt19937 rng(5);
  for (uint8_t& v : noise) v = static_cast<uint8_t>(rng());
  WriteJpeg(dir + "/whole.jpg", 32, 32, 3, noise);
  const std::string jpeg = ReadAll(dir + "/whole.jpg");
  WriteFile(dir + "/half.jpg", jpeg.substr(0, jpeg.size() / 2));
  s = DecodeImageFile(dir + "/half.jpg").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr(dir + "/half.jpg"));
  WritePng(dir + "/whole.png", 32, 32, PNG_COLOR_TYPE_RGB, noise);
  const std::string png = ReadAll(dir + "/whole.png");
  WriteFile(dir + "/half.png", png.substr(0, png.size() / 2));
  s = DecodeImageFile(dir + "/half.png").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr(dir + "/half.png"));
  s = DecodeImageFile(dir + "/missing.png").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr(dir + "/missing.png"));
}

// ------------------------------------------------------------- resampling

TEST(ResizeTest, BilinearByHand) {
  // Shrinking 4 -> 2: scale 2, the triangle widened to support 2. Output 0
  // is centred at 1.0 over inputs 0..2 with weights 0.75, 0.75, 0.25
  // (normalised 3/7, 3/7, 1/7): 70 * 3/7 + 140 / 7 = 50. Output 1 at 3.0
  // over inputs 1..3 (weights 1/7... by symmetry 1/7, 3/7, 3/7):
  // 70/7 + 140 * 3/7 + 210 * 3/7 = 160.
  EXPECT_THAT(Resize(Row({0, 70, 140, 210}), 1, 2, Resample::kBilinear).pixels,
              ElementsAre(50, 160));
  // Growing 2 -> 4: output 0 at 0.25 sees input 0 only; output 1 at 0.75
  // is 0.75 * in[0] + 0.25 * in[1].
  EXPECT_THAT(Resize(Row({0, 100}), 1, 4, Resample::kBilinear).pixels,
              ElementsAre(0, 25, 75, 100));
  // 2x2 -> 1x1: each pass averages with weights 1/2, rounding half up:
  // rows (10 + 21) / 2 -> 16, (100 + 3) / 2 -> 52; then (16 + 52) / 2 = 34.
  Image square;
  square.channels = 1;
  square.rows = square.cols = 2;
  square.pixels = {10, 21, 100, 3};
  EXPECT_THAT(Resize(square, 1, 1, Resample::kBilinear).pixels, ElementsAre(34));
  // Same size: unchanged.
  EXPECT_THAT(Resize(square, 2, 2, Resample::kBicubic).pixels,
              ElementsAre(10, 21, 100, 3));
}

TEST(ResizeTest, BicubicByHand) {
  // Keys cubic, a = -0.5: f(0.25) = 0.8671875, f(0.75) = 0.2265625,
  // f(1.25) = -0.0703125. Growing 2 -> 4 with inputs {0, 100}: output 1
  // (centre 0.75) = 100 * 0.2265625 / 1.09375 = 20.7 -> 21; output 3
  // (centre 1.75) = 100 * 0.8671875 / 0.796875 = 108.8 -> 109 (the window
  // is cut at the edge and renormalised; overshoot is kept); output 0 is
  // 100 * -0.0703125 / 0.796875 < 0 -> clipped to 0.
  EXPECT_THAT(Resize(Row({0, 100}), 1, 4, Resample::kBicubic).pixels,
              ElementsAre(0, 21, 79, 109));
  // Planes are resized independently.
  Image two;
  two.channels = 2;
  two.rows = 1;
  two.cols = 2;
  two.pixels = {0, 100, 100, 0};
  EXPECT_THAT(Resize(two, 1, 4, Resample::kBicubic).pixels,
              ElementsAre(0, 21, 79, 109, 109, 79, 21, 0));
}

TEST(ResizeTest, CenterCropAndGrey) {
  Image im;
  im.channels = 1;
  im.rows = 3;
  im.cols = 4;
  im.pixels = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
  // top = (3 - 2) // 2 = 0, left = (4 - 2) // 2 = 1.
  EXPECT_THAT(CenterCrop(im, 2, 2).pixels, ElementsAre(2, 3, 6, 7));
  // Larger than the image: zero padding, the image at ceil(pad / 2):
  // rows: top = (3 - 4) // 2 = -1; cols: left = (4 - 5) // 2 = -1.
  EXPECT_THAT(CenterCrop(im, 4, 5).pixels,
              ElementsAre(0, 0, 0, 0, 0,    //
                          0, 1, 2, 3, 4,    //
                          0, 5, 6, 7, 8,    //
                          0, 9, 10, 11, 12));
  Image rgb;
  rgb.channels = 3;
  rgb.rows = 1;
  rgb.cols = 2;
  rgb.pixels = {255, 10, 0, 20, 0, 30};  // pixels (255,0,0) and (10,20,30)
  // (255 * 19595 + 32768) >> 16 = 76; (10*19595 + 20*38470 + 30*7471 +
  // 32768) >> 16 = 18.
  EXPECT_THAT(ToGrey(rgb).pixels, ElementsAre(76, 18));
}

TEST(PreprocessorConfigTest, ViTAndClipFilesAndTheirErrors) {
  const std::string dir = FreshDir("preproc");
  WriteFile(dir + "/vit.json", R"({
    "image_processor_type": "ViTImageProcessor", "do_resize": true,
    "size": {"height": 4, "width": 6}, "resample": 2, "do_rescale": true,
    "rescale_factor": 0.00392156862745098, "do_normalize": true,
    "image_mean": [0.1, 0.2, 0.3], "image_std": [0.5, 0.25, 0.125]})");
  absl::StatusOr<ImagePreprocess> vit = ReadPreprocessorConfig(dir + "/vit.json");
  ASSERT_TRUE(vit.ok()) << vit.status();
  EXPECT_EQ(vit->resize_rows, 4);
  EXPECT_EQ(vit->resize_cols, 6);
  EXPECT_EQ(vit->shortest_edge, 0);
  EXPECT_EQ(vit->crop_rows, 0);
  EXPECT_EQ(vit->resample, Resample::kBilinear);
  EXPECT_THAT(vit->mean, ElementsAre(0.1, 0.2, 0.3));
  EXPECT_THAT(vit->std, ElementsAre(0.5, 0.25, 0.125));

  WriteFile(dir + "/clip.json", R"({
    "feature_extractor_type": "CLIPFeatureExtractor", "size": 4,
    "crop_size": 3, "do_rescale": false})");
  absl::StatusOr<ImagePreprocess> clip = ReadPreprocessorConfig(dir + "/clip.json");
  ASSERT_TRUE(clip.ok()) << clip.status();
  EXPECT_EQ(clip->shortest_edge, 4);
  EXPECT_EQ(clip->crop_rows, 3);
  EXPECT_EQ(clip->crop_cols, 3);
  EXPECT_EQ(clip->resample, Resample::kBicubic);  // CLIP's default
  // No rescale: (p - m) / s = (p / 255 - m / 255) / (s / 255).
  EXPECT_DOUBLE_EQ(clip->mean[0], 0.48145466 / 255);
  EXPECT_DOUBLE_EQ(clip->std[2], 0.27577711 / 255);
  // Shortest edge 4 of a 2x6 image -> 4x12, then the centre 3x3.
  Image wide;
  wide.channels = 3;
  wide.rows = 2;
  wide.cols = 6;
  wide.pixels.assign(3 * 12, 60);
  absl::StatusOr<Image> out = Preprocess(wide, *clip);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->rows, 3);
  EXPECT_EQ(out->cols, 3);
  EXPECT_EQ(out->pixels, std::vector<uint8_t>(27, 60));

  WriteFile(dir + "/bad_type.json", R"({"image_processor_type": "DetrImageProcessor"})");
  absl::Status s = ReadPreprocessorConfig(dir + "/bad_type.json").status();
  EXPECT_THAT(s.message(), AllOf(HasSubstr(dir + "/bad_type.json"),
                                 HasSubstr("image_processor_type"),
                                 HasSubstr("DetrImageProcessor")));
  WriteFile(dir + "/bad_resample.json",
            R"({"image_processor_type": "ViTImageProcessor", "resample": 0})");
  s = ReadPreprocessorConfig(dir + "/bad_resample.json").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("bad_resample.json"), HasSubstr("\"resample\"")));
  WriteFile(dir + "/bad_size.json",
            R"({"image_processor_type": "ViTImageProcessor", "size": "big"})");
  s = ReadPreprocessorConfig(dir + "/bad_size.json").status();
  EXPECT_THAT(s.message(), AllOf(HasSubstr("bad_size.json"), HasSubstr("\"size\"")));
  WriteFile(dir + "/broken.json", "{\"image_processor_type\": ");
  s = ReadPreprocessorConfig(dir + "/broken.json").status();
  EXPECT_THAT(s.message(), AllOf(HasSubstr("broken.json"), HasSubstr("invalid JSON")));
}

// ----------------------------------------------------------- image folders

// A 2x2 RGB PNG whose pixel k (row-major) is (base + k, base + 10 + k,
// base + 20 + k).
void WriteTile(const std::string& path, int base) {
  std::vector<uint8_t> px;
  for (int k = 0; k < 4; ++k) {
    px.insert(px.end(), {static_cast<uint8_t>(base + k),
                         static_cast<uint8_t>(base + 10 + k),
                         static_cast<uint8_t>(base + 20 + k)});
  }
  WritePng(path, 2, 2, PNG_COLOR_TYPE_RGB, px);
}

std::vector<uint8_t> TilePlanes(int base) {
  std::vector<uint8_t> out;
  for (int c = 0; c < 3; ++c) {
    for (int k = 0; k < 4; ++k) out.push_back(static_cast<uint8_t>(base + 10 * c + k));
  }
  return out;
}

TEST(ImageFolderTest, ListsClassesInOrderAndDecodesExactly) {
  const std::string root = FreshDir("folder");
  WriteTile(root + "/dog/b.png", 100);
  WriteTile(root + "/cat/z.PNG", 40);
  WriteTile(root + "/cat/a.png", 10);
  WriteFile(root + "/cat/notes.txt", "not an image");
  WriteFile(root + "/README.md", "top-level files are ignored");
  WriteTile(root + "/.cache/x.png", 1);
  absl::StatusOr<std::vector<ImageFile>> files = ListImageFolder(root, false);
  ASSERT_TRUE(files.ok()) << files.status();
  ASSERT_EQ(files->size(), 3u);
  EXPECT_EQ((*files)[0].relative, "cat/a.png");
  EXPECT_EQ((*files)[1].relative, "cat/z.PNG");
  EXPECT_EQ((*files)[2].relative, "dog/b.png");
  EXPECT_EQ((*files)[2].class_name, "dog");

  ImagePreprocess spec;
  spec.resize_rows = spec.resize_cols = 2;  // already 2x2: untouched
  spec.mean = {0.1, 0.2, 0.3};
  spec.std = {0.4, 0.5, 0.6};
  // Stated order: dog = 0, cat = 1.
  absl::StatusOr<LabelMap> labels = LabelMap::FromNames({"dog", "cat"}, "test");
  ASSERT_TRUE(labels.ok());
  absl::StatusOr<ImageSet> set = LoadImageFiles(*files, *labels, spec);
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->channels, 3);
  EXPECT_EQ(set->rows, 2);
  EXPECT_EQ(set->cols, 2);
  EXPECT_THAT(set->labels, ElementsAre(1, 1, 0));
  std::vector<uint8_t> want = TilePlanes(10);
  for (int base : {40, 100}) {
    std::vector<uint8_t> t = TilePlanes(base);
    want.insert(want.end(), t.begin(), t.end());
  }
  EXPECT_EQ(set->pixels, want);
  EXPECT_THAT(set->mean, ElementsAre(0.1, 0.2, 0.3));
  EXPECT_THAT(set->std, ElementsAre(0.4, 0.5, 0.6));

  // Grey: one plane by ITU-R 601-2 luma.
  spec.channels = 1;
  spec.mean = {0.5};
  spec.std = {0.5};
  set = LoadImageFiles({(*files)[0]}, *labels, spec);
  ASSERT_TRUE(set.ok()) << set.status();
  std::vector<uint8_t> grey;
  for (int k = 0; k < 4; ++k) {
    const uint32_t r = 10 + k, g = 20 + k, b = 30 + k;
    grey.push_back(static_cast<uint8_t>((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16));
  }
  EXPECT_EQ(set->pixels, grey);

  // A class the labels do not hold, an undecodable file: named.
  absl::StatusOr<LabelMap> only_dog = LabelMap::FromNames({"dog"}, "test");
  absl::Status s = LoadImageFiles(*files, *only_dog, spec).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(root + "/cat"), HasSubstr("\"cat\"")));
  WriteFile(root + "/dog/broken.jpg", "\xff\xd8\xff garbage");
  files = ListImageFolder(root, false);
  ASSERT_TRUE(files.ok());
  s = LoadImageFiles(*files, *labels, spec).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr(root + "/dog/broken.jpg"));

  EXPECT_EQ(ListImageFolder(root + "/nowhere", false).status().code(),
            absl::StatusCode::kNotFound);
  const std::string empty = FreshDir("folder_empty");
  fs::create_directories(empty + "/cat");
  s = ListImageFolder(empty, false).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr(empty));
}

// An image-folder run: train/test folders with domains photo and sketch.
RunConfig FolderRun(const std::string& root, bool grouped) {
  RunConfig c;
  c.model.kind = "vit";
  c.model.image_size = 2;
  c.model.patch_size = 1;
  c.model.channels = 3;
  c.model.num_classes = 3;
  c.pretrain.enabled = false;
  c.pretrain.label_map.clear();
  c.data.dataset = "image_folder";
  c.data.train_path = root + "/train";
  c.data.test_path = root + "/test";
  c.data.num_clients = 3;
  if (grouped) {
    c.data.group_field = "domain";
    c.data.partition = "by_group";
  }
  return c;
}

TEST(ImageFolderTest, GroupedRunPartitionsByDomainAndSharesLoadBackIdentically) {
  const std::string root = FreshDir("folder_run");
  int base = 0;
  for (const char* domain : {"photo", "sketch"}) {
    for (const char* cls : {"ant", "bee"}) {
      for (int k = 0; k < 3; ++k) {
        WriteTile(absl::StrCat(root, "/train/", domain, "/", cls, "/", k, ".png"),
                  base += 3);
      }
      WriteTile(absl::StrCat(root, "/test/", domain, "/", cls, "/t.png"), base += 3);
    }
  }
  RunConfig c = FolderRun(root, true);
  ASSERT_TRUE(c.Validate().ok()) << c.Validate();
  absl::StatusOr<ImageFolderShares> shares = BuildImageFolderShares(c);
  ASSERT_TRUE(shares.ok()) << shares.status();
  EXPECT_THAT(shares->labels.names(), ElementsAre("ant", "bee"));
  EXPECT_THAT(shares->groups, ElementsAre("photo", "sketch"));
  // Clients 0 and 2 hold photo (6 images, 3 each), client 1 all of sketch.
  EXPECT_THAT(shares->client_group, ElementsAre(0, 1, 0));
  ASSERT_EQ(shares->clients.size(), 3u);
  EXPECT_EQ(shares->clients[0].size(), 3u);
  EXPECT_EQ(shares->clients[1].size(), 6u);
  EXPECT_EQ(shares->clients[2].size(), 3u);
  std::set<std::string> photo;
  for (int i : {0, 2}) {
    for (const ImageFile& f : shares->clients[i]) {
      EXPECT_EQ(f.group, "photo");
      photo.insert(f.relative);
    }
  }
  EXPECT_EQ(photo.size(), 6u);
  for (const ImageFile& f : shares->clients[1]) EXPECT_EQ(f.group, "sketch");
  EXPECT_EQ(shares->test.size(), 4u);  // every domain evaluated

  absl::StatusOr<FederatedImages> images = BuildFederatedImages(c);
  ASSERT_TRUE(images.ok()) << images.status();
  EXPECT_EQ(images->holdout.size(), 0);
  EXPECT_THAT(images->client_domain, ElementsAre(0, 1, 0));
  EXPECT_EQ(images->test.size(), 4);
  EXPECT_THAT(images->test.labels, ElementsAre(0, 1, 0, 1));
  EXPECT_THAT(images->test.mean, ElementsAre(0.5, 0.5, 0.5));
  // Only one client decoded on request.
  absl::StatusOr<FederatedImages> one = BuildFederatedImages(c, 1);
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(one->clients[0].size(), 0);
  EXPECT_EQ(one->clients[1].pixels, images->clients[1].pixels);

  // A client's share (what layerfl-partition writes) decodes to exactly
  // the simulator's inputs and labels.
  for (int i = 0; i < 3; ++i) {
    const std::string share = TempPath(absl::StrCat("folder_share/client-", i));
    fs::remove_all(share);
    ASSERT_TRUE(CopyImageFiles(shares->clients[i], shares->labels, share).ok());
    EXPECT_EQ(ReadAll(share + "/labels.txt"), "ant\nbee\n");
    absl::StatusOr<ImageSet> own = LoadClientImages(share, c);
    ASSERT_TRUE(own.ok()) << own.status();
    EXPECT_EQ(own->pixels, images->clients[i].pixels) << i;
    EXPECT_EQ(own->labels, images->clients[i].labels) << i;
  }
  // Reproducible from the seed; another seed deals the photo images anew.
  absl::StatusOr<ImageFolderShares> again = BuildImageFolderShares(c);
  ASSERT_TRUE(again.ok());
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(again->clients[i].size(), shares->clients[i].size());
    for (size_t k = 0; k < again->clients[i].size(); ++k) {
      EXPECT_EQ(again->clients[i][k].relative, shares->clients[i][k].relative);
    }
  }

  // A test class outside the stated labels is named.
  c.data.labels = {"bee", "ant"};
  absl::StatusOr<ImageFolderShares> stated = BuildImageFolderShares(c);
  ASSERT_TRUE(stated.ok()) << stated.status();
  EXPECT_THAT(stated->labels.names(), ElementsAre("bee", "ant"));
  WriteTile(root + "/test/photo/cow/t.png", 1);
  absl::Status s = BuildImageFolderShares(c).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(root + "/test/photo/cow"),
                                 HasSubstr("data.labels")));
  // More clients per group than images.
  fs::remove_all(root + "/test/photo/cow");
  c.data.num_clients = 13;
  s = BuildImageFolderShares(c).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(root + "/train"), HasSubstr("by_group")));
}

TEST(ImageFolderTest, RunConfigPreprocessingWithoutACheckpoint) {
  RunConfig c = FolderRun("/nowhere", false);
  c.data.image_mean = {0.1, 0.2, 0.3};
  c.data.image_std = {1, 2, 3};
  c.data.resample = "bicubic";
  absl::StatusOr<ImagePreprocess> spec = ImagePreprocessFor(c);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->channels, 3);
  EXPECT_EQ(spec->resize_rows, 2);
  EXPECT_EQ(spec->resize_cols, 2);
  EXPECT_EQ(spec->resample, Resample::kBicubic);
  EXPECT_THAT(spec->mean, ElementsAre(0.1, 0.2, 0.3));
  c.model.channels = 2;
  absl::Status s = ImagePreprocessFor(c).status();
  EXPECT_THAT(s.message(), HasSubstr("model.channels"));
  // model.kind hf reads the checkpoint's preprocessor_config.json.
  const std::string hf = FreshDir("hf_vision");
  WriteFile(hf + "/config.json",
            R"({"model_type": "vit", "architectures": ["ViTModel"],
                "image_size": 8, "patch_size": 4})");
  WriteFile(hf + "/preprocessor_config.json",
            R"({"image_processor_type": "ViTImageProcessor", "size": {"height": 8, "width": 8}})");
  c.model.kind = "hf";
  c.model.hf_dir = hf;
  spec = ImagePreprocessFor(c);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->resize_rows, 8);
  EXPECT_EQ(spec->channels, 3);
  // ...whose output must be what config.json's model takes.
  WriteFile(hf + "/preprocessor_config.json",
            R"({"image_processor_type": "ViTImageProcessor", "size": {"height": 6, "width": 6}})");
  EXPECT_THAT(ImagePreprocessFor(c).status().message(),
              AllOf(HasSubstr("preprocessor_config.json: gives 3 x 6 x 6 images"),
                    HasSubstr("takes 3 x 8 x 8")));
  // Without one: the checkpoint's image size, not model.image_size.
  std::filesystem::remove(hf + "/preprocessor_config.json");
  spec = ImagePreprocessFor(c);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->resize_rows, 8);
  // A text checkpoint cannot read images.
  WriteFile(hf + "/config.json",
            R"({"model_type": "bert", "architectures": ["BertModel"], "vocab_size": 7,
                "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
                "intermediate_size": 16, "max_position_embeddings": 16,
                "type_vocab_size": 2, "layer_norm_eps": 1e-12, "pad_token_id": 0})");
  EXPECT_THAT(ImagePreprocessFor(c).status().message(),
              HasSubstr("needs a vision checkpoint, but model.hf_dir '" + hf +
                        "' holds a bert text model"));
}

// ------------------------------------------------------------ JSONL / CSV

TEST(JsonlTest, ReadsFieldsUnicodeAndIntegerLabels) {
  const std::string path = TempPath("records/ok.jsonl");
  WriteFile(path,
            "\xEF\xBB\xBF{\"text\": \"na\\u00efve caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC\", "
            "\"label\": \"pos\", \"lang\": \"fr\"}\r\n"
            "\n"
            "   \n"
            "{\"label\": 3, \"text\": \"say \\\"hi\\\"\\nbye\", \"lang\": 7, \"x\": [1]}\n");
  absl::StatusOr<std::vector<TextRecord>> r =
      ReadJsonl(path, RecordFields{"text", "label", "lang"});
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ((*r)[0].text, "na\xC3\xAFve caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC");
  EXPECT_EQ((*r)[0].label, "pos");
  EXPECT_EQ((*r)[0].group, "fr");
  EXPECT_EQ((*r)[0].line, 1);
  EXPECT_EQ((*r)[1].text, "say \"hi\"\nbye");
  EXPECT_EQ((*r)[1].label, "3");
  EXPECT_EQ((*r)[1].group, "7");
  EXPECT_EQ((*r)[1].line, 4);
}

TEST(JsonlTest, BadLinesAreNamedByFileAndLine) {
  const std::string path = TempPath("records/bad.jsonl");
  const RecordFields fields;
  const auto error = [&](const std::string& contents) {
    WriteFile(path, contents);
    absl::Status s = ReadJsonl(path, fields).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    return std::string(s.message());
  };
  const std::string ok = "{\"text\": \"a\", \"label\": \"x\"}\n";
  EXPECT_THAT(error(ok + "{\"text\": \"b\", \"label\": }\n"),
              AllOf(HasSubstr(path + ":2:"), HasSubstr("invalid JSON")));
  EXPECT_THAT(error(ok + ok + "[1, 2]\n"),
              AllOf(HasSubstr(path + ":3:"), HasSubstr("expected a JSON object")));
  EXPECT_THAT(error(ok + "{\"label\": \"x\"}\n"),
              AllOf(HasSubstr(path + ":2:"), HasSubstr("missing field \"text\"")));
  EXPECT_THAT(error("{\"text\": 5, \"label\": \"x\"}\n"),
              AllOf(HasSubstr(path + ":1:"), HasSubstr("\"text\" must be a string"),
                    HasSubstr("number")));
  EXPECT_THAT(error("{\"text\": \"a\", \"label\": 1.5}\n"),
              AllOf(HasSubstr(path + ":1:"),
                    HasSubstr("\"label\" must be a string or an integer")));
  EXPECT_THAT(error("{\"text\": \"\", \"label\": \"x\"}\n"),
              AllOf(HasSubstr(path + ":1:"), HasSubstr("empty text")));
  EXPECT_THAT(error("\n\n"), AllOf(HasSubstr(path), HasSubstr("no examples")));
}

TEST(CsvTest, QuotesEmbeddedNewlinesAndUnicode) {
  const std::string path = TempPath("records/ok.csv");
  WriteFile(path,
            "\xEF\xBB\xBFid,label,text\r\n"
            "1,pos,plain text\r\n"
            "2,neg,\"with, comma and \"\"quotes\"\"\"\r\n"
            "\r\n"
            "3,\"pos\",\"two\r\nlines\nthree\"\n"
            "4,neg,\xC3\xBC\xC3\xB1\xC3\xAF\xE2\x82\xAC\n"
            "5,neg,\"\"\n"
            "6,pos,last without newline");
  absl::StatusOr<std::vector<CsvRow>> rows = ParseCsv(ReadAll(path), path);
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 7u);
  EXPECT_THAT((*rows)[0].fields, ElementsAre("id", "label", "text"));
  EXPECT_THAT((*rows)[2].fields, ElementsAre("2", "neg", "with, comma and \"quotes\""));
  EXPECT_THAT((*rows)[3].fields, ElementsAre("3", "pos", "two\r\nlines\nthree"));
  EXPECT_EQ((*rows)[3].line, 5);
  EXPECT_EQ((*rows)[4].line, 8);
  EXPECT_THAT((*rows)[5].fields, ElementsAre("5", "neg", ""));
  EXPECT_THAT((*rows)[6].fields, ElementsAre("6", "pos", "last without newline"));

  // The empty text of record 5 is refused by the record reader.
  absl::Status s = ReadCsv(path, RecordFields{}).status();
  EXPECT_THAT(s.message(), AllOf(HasSubstr(path + ":9:"), HasSubstr("empty text")));
  WriteFile(path, "text,label\n\"a \"\"b\"\"\",x\n\xE6\x97\xA5,y\n");
  absl::StatusOr<std::vector<TextRecord>> r = ReadCsv(path, RecordFields{});
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ((*r)[0].text, "a \"b\"");
  EXPECT_EQ((*r)[1].text, "\xE6\x97\xA5");
  EXPECT_EQ((*r)[1].label, "y");
  EXPECT_EQ((*r)[1].line, 3);
  // Quoting round-trips whatever a field holds.
  const std::string tricky = "a,\"b\"\r\nc\n";
  rows = ParseCsv(CsvQuote(tricky) + "," + CsvQuote("") + "\n", path);
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_THAT((*rows)[0].fields, ElementsAre(tricky, ""));
}

TEST(CsvTest, BadFilesAreNamedByFileAndLine) {
  const std::string path = TempPath("records/bad.csv");
  const auto error = [&](const std::string& contents) {
    WriteFile(path, contents);
    absl::Status s = ReadCsv(path, RecordFields{}).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    return std::string(s.message());
  };
  EXPECT_THAT(error("text,label\na,x\n\"open\nstill open,x\n"),
              AllOf(HasSubstr(path + ":3:"), HasSubstr("unterminated")));
  // The record after a two-line quoted field starts on line 4.
  EXPECT_THAT(error("text,label\n\"one\ntwo\",x\na,b,c\n"),
              AllOf(HasSubstr(path + ":4:"), HasSubstr("3 fields, the header has 2")));
  EXPECT_THAT(error("text,label\nsay \"hi\",x\n"),
              AllOf(HasSubstr(path + ":2:"), HasSubstr("quote inside an unquoted field")));
  EXPECT_THAT(error("text,label\n\"a\"b,x\n"),
              AllOf(HasSubstr(path + ":2:"), HasSubstr("after a closing quote")));
  EXPECT_THAT(error("body,label\na,x\n"),
              AllOf(HasSubstr(path + ":1:"), HasSubstr("no column \"text\""),
                    HasSubstr("body, label")));
  EXPECT_THAT(error("text,label,text\na,x,b\n"),
              AllOf(HasSubstr(path + ":1:"), HasSubstr("\"text\" twice")));
  EXPECT_THAT(error("text,label\na,\n"),
              AllOf(HasSubstr(path + ":2:"), HasSubstr("empty label")));
  EXPECT_THAT(error("text,label\n"), HasSubstr("no examples"));
}

TEST(LabelMapTest, SortedStatedAndUnknownLabels) {
  LabelMap sorted = LabelMap::Sorted({"neg", "pos", "neutral", "neg", "Pos"});
  EXPECT_THAT(sorted.names(), ElementsAre("Pos", "neg", "neutral", "pos"));
  EXPECT_EQ(*sorted.Id("neutral"), 2);
  EXPECT_EQ(sorted.Id("none").status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(LabelMap::FromNames({"a", "b", "a"}, "data.labels").status().message(),
              AllOf(HasSubstr("data.labels"), HasSubstr("\"a\" is listed twice")));
  absl::StatusOr<LabelMap> stated = LabelMap::FromNames({"pos", "neg"}, "data.labels");
  ASSERT_TRUE(stated.ok());
  std::vector<TextRecord> records = {{"good", "pos", "", 1}, {"bad", "neg", "", 2},
                                     {"meh", "neutral", "", 5}};
  absl::Status s = MapLabels(records, *stated, "test.jsonl").status();
  EXPECT_THAT(s.message(), AllOf(HasSubstr("test.jsonl:5:"), HasSubstr("\"neutral\""),
                                 HasSubstr("pos, neg")));
  records.pop_back();
  absl::StatusOr<std::vector<LabeledText>> mapped = MapLabels(records, *stated, "t");
  ASSERT_TRUE(mapped.ok());
  EXPECT_EQ((*mapped)[0].label, 0);
  EXPECT_EQ((*mapped)[1].label, 1);

  const std::string file = TempPath("records/labels.txt");
  ASSERT_TRUE(WriteLabelsFile(*stated, file).ok());
  EXPECT_EQ(ReadAll(file), "pos\nneg\n");
  absl::StatusOr<LabelMap> back = ReadLabelsFile(file);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_THAT(back->names(), ElementsAre("pos", "neg"));
  WriteFile(file, "pos\n\nneg\n");
  EXPECT_THAT(ReadLabelsFile(file).status().message(), HasSubstr(file + ":2:"));
}

// A jsonl or csv text run with a word-level model.
RunConfig TextRun(const std::string& dataset, const std::string& train,
                  const std::string& test) {
  RunConfig c;
  c.model.kind = "text";
  c.model.num_classes = 3;
  c.model.vocab_size = 20;
  c.model.max_len = 4;
  c.pretrain.label_map.clear();
  c.data.dataset = dataset;
  c.data.train_path = train;
  c.data.test_path = test;
  c.data.text_field = "body";
  c.data.label_field = "topic";
  c.data.num_clients = 2;
  return c;
}

TEST(RecordTextTest, JsonlRunMapsLabelsAndSharesReloadIdentically) {
  const std::string train = TempPath("run/train.jsonl");
  const std::string test = TempPath("run/test.jsonl");
  WriteFile(train,
            "{\"body\": \"red apple\", \"topic\": \"fruit\", \"lang\": \"en\"}\n"
            "{\"body\": \"blue sky\", \"topic\": \"sky\", \"lang\": \"en\"}\n"
            "{\"body\": \"pomme rouge\", \"topic\": \"fruit\", \"lang\": \"fr\"}\n"
            "{\"body\": \"ciel bleu\\nnuit\", \"topic\": \"sky\", \"lang\": \"fr\"}\n"
            "{\"body\": \"green apple\", \"topic\": \"fruit\", \"lang\": \"en\"}\n");
  WriteFile(test, "{\"body\": \"apple sky\", \"topic\": \"sky\", \"lang\": \"en\"}\n");
  RunConfig c = TextRun("jsonl", train, test);
  c.data.group_field = "lang";
  c.data.partition = "by_group";
  ASSERT_TRUE(c.Validate().ok()) << c.Validate();
  absl::StatusOr<TextShares> shares = BuildTextShares(c);
  ASSERT_TRUE(shares.ok()) << shares.status();
  EXPECT_THAT(shares->labels, ElementsAre("fruit", "sky"));  // sorted
  EXPECT_THAT(shares->groups, ElementsAre("en", "fr"));
  EXPECT_THAT(shares->client_group, ElementsAre(0, 1));
  // Client 0 holds every English line (file order), client 1 the French.
  ASSERT_EQ(shares->clients[0].size(), 3u);
  EXPECT_EQ(shares->clients[0][0].text, "red apple");
  EXPECT_EQ(shares->clients[0][1].label, 1);
  EXPECT_EQ(shares->clients[1][1].text, "ciel bleu\nnuit");
  EXPECT_EQ(shares->test[0].label, 1);

  absl::StatusOr<FederatedText> text = BuildFederatedText(c);
  ASSERT_TRUE(text.ok()) << text.status();
  for (int i = 0; i < 2; ++i) {
    const std::string dir = TempPath(absl::StrCat("run_share/client-", i));
    fs::remove_all(dir);
    ASSERT_TRUE(WriteClientTextShare(c, *shares, i, dir).ok());
    EXPECT_EQ(ReadAll(dir + "/labels.txt"), "fruit\nsky\n");
    EXPECT_TRUE(fs::exists(dir + "/vocab.txt"));
    absl::StatusOr<TextSet> own = LoadClientText(dir, c);
    ASSERT_TRUE(own.ok()) << own.status();
    EXPECT_EQ(own->tokens, text->clients[i].tokens) << i;
    EXPECT_EQ(own->labels, text->clients[i].labels) << i;
  }

  // Stated order, and a test label outside it named by file and line.
  c.data.labels = {"sky", "fruit"};
  shares = BuildTextShares(c);
  ASSERT_TRUE(shares.ok()) << shares.status();
  EXPECT_EQ(shares->clients[0][0].label, 1);  // fruit
  WriteFile(test,
            "{\"body\": \"apple\", \"topic\": \"sky\"}\n"
            "{\"body\": \"cheese\", \"topic\": \"dairy\"}\n");
  c.data.group_field.clear();
  c.data.partition = "iid";
  absl::Status s = BuildTextShares(c).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(test + ":2:"), HasSubstr("\"dairy\"")));
  // Without stated labels the training file's define the map: same error.
  c.data.labels.clear();
  s = BuildTextShares(c).status();
  EXPECT_THAT(s.message(), HasSubstr(test + ":2:"));
  // More labels than the head has.
  c.model.num_classes = 2;
  c.data.labels = {"a", "b", "c"};
  EXPECT_THAT(c.Validate().message(), HasSubstr("data.labels"));
}

TEST(RecordTextTest, CsvRunSharesKeepQuotedTextByteForByte) {
  const std::string train = TempPath("run/train.csv");
  const std::string test = TempPath("run/test.csv");
  WriteFile(train,
            "topic,body\n"
            "b,\"one, \"\"two\"\"\nthree\"\n"
            "a,four five\n"
            "b,six\r\n"
            "a,\"seven\r\neight\"\n");
  WriteFile(test, "body,topic\nfive six,a\n");
  RunConfig c = TextRun("csv", train, test);
  c.data.partition = "iid";
  ASSERT_TRUE(c.Validate().ok()) << c.Validate();
  absl::StatusOr<TextShares> shares = BuildTextShares(c);
  ASSERT_TRUE(shares.ok()) << shares.status();
  absl::StatusOr<FederatedText> text = BuildFederatedText(c);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_THAT(text->test.labels, ElementsAre(0));
  for (int i = 0; i < 2; ++i) {
    const std::string dir = TempPath(absl::StrCat("csv_share/client-", i));
    fs::remove_all(dir);
    ASSERT_TRUE(WriteClientTextShare(c, *shares, i, dir).ok());
    absl::StatusOr<std::vector<TextRecord>> back =
        ReadCsv(dir + "/train.csv", RecordFields{"body", "topic", ""});
    ASSERT_TRUE(back.ok()) << back.status();
    ASSERT_EQ(back->size(), shares->client_records[i].size());
    for (size_t k = 0; k < back->size(); ++k) {
      EXPECT_EQ((*back)[k].text, shares->client_records[i][k].text);
    }
    absl::StatusOr<TextSet> own = LoadClientText(dir, c);
    ASSERT_TRUE(own.ok()) << own.status();
    EXPECT_EQ(own->tokens, text->clients[i].tokens);
    EXPECT_EQ(own->labels, text->clients[i].labels);
  }
  // A share's labels.txt that lacks a label of its records is named.
  const std::string dir = TempPath("csv_share/client-0");
  WriteFile(dir + "/labels.txt", "zzz\n");
  absl::Status s = LoadClientText(dir, c).status();
  EXPECT_THAT(s.message(), AllOf(HasSubstr(dir + "/train.csv:2:"), HasSubstr("zzz")));
}

TEST(RecordTextTest, HfModelsEncodeWithTheCheckpointTokenizer) {
  const std::string hf = FreshDir("hf_text");
  WriteFile(hf + "/vocab.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\nworld\n");
  WriteFile(hf + "/config.json",
            R"({"model_type": "bert", "architectures": ["BertModel"], "vocab_size": 7,
                "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
                "intermediate_size": 16, "max_position_embeddings": 16,
                "type_vocab_size": 2, "layer_norm_eps": 1e-12, "pad_token_id": 0})");
  EXPECT_EQ(*DetectTokenizerKind(hf), "wordpiece");
  EXPECT_THAT(DetectTokenizerKind(FreshDir("hf_none")).status().message(),
              HasSubstr("model.hf_dir"));
  const std::string train = TempPath("hf_run/train.jsonl");
  WriteFile(train,
            "{\"body\": \"Hello world\", \"topic\": \"x\"}\n"
            "{\"body\": \"world\", \"topic\": \"y\"}\n");
  RunConfig c = TextRun("jsonl", train, train);
  c.model.kind = "hf";
  c.model.hf_dir = hf;
  c.model.max_len = 5;
  c.data.num_clients = 1;
  ASSERT_TRUE(c.Validate().ok()) << c.Validate();
  c.model.max_len = 17;  // more than the checkpoint's 16 positions
  EXPECT_THAT(BuildFederatedText(c).status().message(),
              HasSubstr("model.max_len: the checkpoint in '" + hf +
                        "' takes at most 16 tokens, got 17"));
  c.model.max_len = 5;
  absl::StatusOr<FederatedText> text = BuildFederatedText(c);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_TRUE(text->vocab.empty());
  // [CLS] hello world [SEP] [PAD]; [CLS] world [SEP] [PAD] [PAD].
  EXPECT_THAT(text->test.tokens, ElementsAre(2, 5, 6, 3, 0, 2, 6, 3, 0, 0));
  absl::StatusOr<TextShares> shares = BuildTextShares(c);
  ASSERT_TRUE(shares.ok());
  const std::string dir = TempPath("hf_run/client-000");
  fs::remove_all(dir);
  ASSERT_TRUE(WriteClientTextShare(c, *shares, 0, dir).ok());
  EXPECT_FALSE(fs::exists(dir + "/vocab.txt"));
  absl::StatusOr<TextSet> own = LoadClientText(dir, c);
  ASSERT_TRUE(own.ok()) << own.status();
  EXPECT_EQ(own->tokens, text->clients[0].tokens);
}

// ------------------------------------------------------------- partition

TEST(PartitionByGroupTest, ByHand) {
  // Group 0 = {0, 2, 4, 5}, group 1 = {1, 3}; 3 clients: 0 and 2 get group
  // 0, client 1 group 1.
  const std::vector<int> groups = {0, 1, 0, 1, 0, 0};
  absl::StatusOr<Partition> p = PartitionByGroup(groups, 2, 3, 42);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_THAT(p->domain, ElementsAre(0, 1, 0));
  // The same draw by hand: group 0's indices shuffled first, then group 1's,
  // with one engine; group 0 dealt 2 + 2 to clients 0 and 2.
  std::mt19937_64 rng(42);
  std::vector<int64_t> g0 = {0, 2, 4, 5}, g1 = {1, 3};
  Shuffle(g0, rng);
  Shuffle(g1, rng);
  std::vector<int64_t> c0(g0.begin(), g0.begin() + 2), c2(g0.begin() + 2, g0.end());
  std::sort(c0.begin(), c0.end());
  std::sort(c2.begin(), c2.end());
  std::sort(g1.begin(), g1.end());
  EXPECT_EQ(p->clients[0], c0);
  EXPECT_EQ(p->clients[1], g1);
  EXPECT_EQ(p->clients[2], c2);
  // Uneven: 5 clients over 2 groups: group 0 has clients 0, 2, 4 (sizes
  // 2, 1, 1 of its 4), group 1 clients 1, 3 (1 each).
  p = PartitionByGroup(groups, 2, 5, 7);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->clients[0].size(), 2u);
  EXPECT_EQ(p->clients[2].size(), 1u);
  EXPECT_EQ(p->clients[4].size(), 1u);
  EXPECT_EQ(p->clients[1].size(), 1u);
  EXPECT_EQ(p->clients[3].size(), 1u);
  std::set<int64_t> all;
  for (const auto& c : p->clients) all.insert(c.begin(), c.end());
  EXPECT_EQ(all.size(), 6u);

  EXPECT_THAT(PartitionByGroup(groups, 2, 1, 1).status().message(),
              HasSubstr("every group needs a client"));
  EXPECT_THAT(PartitionByGroup(groups, 2, 7, 1).status().message(),
              HasSubstr("group 1 has 2 examples for its 3 clients"));
  EXPECT_THAT(PartitionByGroup({0, 2}, 2, 2, 1).status().message(),
              HasSubstr("groups[1] = 2"));
}

}  // namespace
}  // namespace layerfl

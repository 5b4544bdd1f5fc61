#include "common/data/image.h"

// clang-format off
#include <cstdio>  // jpeglib.h needs FILE and size_t first.
#include <jpeglib.h>
// clang-format on
#include <png.h>

#include <algorithm>
#include <csetjmp>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/data/file.h"
#include "common/util/status_macros.h"
#include "nlohmann/json.hpp"

namespace layerfl {
namespace {

absl::Status Undecodable(const std::string& path, absl::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("cannot decode image ", path, ": ", why));
}

absl::Status CheckSides(const std::string& path, int64_t rows, int64_t cols) {
  if (rows < 1 || cols < 1 || rows > kMaxImageSide || cols > kMaxImageSide) {
    return Undecodable(path, absl::StrCat("size ", cols, "x", rows,
                                          " is outside [1, ", kMaxImageSide,
                                          "] per side"));
  }
  return absl::OkStatus();
}

// Interleaved RGB rows -> CHW planes.
Image FromInterleavedRgb(const std::vector<uint8_t>& rgb, int rows, int cols) {
  Image out;
  out.channels = 3;
  out.rows = rows;
  out.cols = cols;
  out.pixels.resize(static_cast<size_t>(3) * rows * cols);
  const int64_t plane = int64_t{rows} * cols;
  for (int64_t i = 0; i < plane; ++i) {
    out.pixels[i] = rgb[3 * i];
    out.pixels[plane + i] = rgb[3 * i + 1];
    out.pixels[2 * plane + i] = rgb[3 * i + 2];
  }
  return out;
}

// libjpeg reports errors through error_exit, which must not return: the
// job's jmp_buf takes it back to DecodeJpeg. Everything touched after setjmp
// lives in this heap object, so nothing on the stack is indeterminate after
// the jump.
struct JpegJob {
  jpeg_decompress_struct cinfo;
  jpeg_error_mgr err;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX] = {0};
  bool created = false;
  std::vector<uint8_t> rgb;
  ~JpegJob() {
    if (created) jpeg_destroy_decompress(&cinfo);
  }
};

void JpegErrorExit(j_common_ptr cinfo) {
  auto* job = reinterpret_cast<JpegJob*>(cinfo->client_data);
  (*cinfo->err->format_message)(cinfo, job->message);
  std::longjmp(job->jump, 1);
}

// Warnings (msg_level -1: corrupt or truncated data that libjpeg would
// paper over) are errors here; trace messages are ignored.
void JpegEmitMessage(j_common_ptr cinfo, int msg_level) {
  if (msg_level < 0) JpegErrorExit(cinfo);
}

absl::StatusOr<Image> DecodeJpeg(std::string_view bytes,
                                 const std::string& path) {
  auto job = std::make_unique<JpegJob>();
  job->cinfo.err = jpeg_std_error(&job->err);
  job->err.error_exit = JpegErrorExit;
  job->err.emit_message = JpegEmitMessage;
  job->cinfo.client_data = job.get();
  if (setjmp(job->jump) != 0) {
    return Undecodable(path, job->message);
  }
  jpeg_create_decompress(&job->cinfo);
  job->created = true;
  jpeg_mem_src(&job->cinfo,
               reinterpret_cast<const unsigned char*>(bytes.data()),
               static_cast<unsigned long>(bytes.size()));
  jpeg_read_header(&job->cinfo, TRUE);
  job->cinfo.out_color_space = JCS_RGB;
  job->cinfo.dct_method = JDCT_ISLOW;
  job->cinfo.do_fancy_upsampling = TRUE;
  job->cinfo.do_block_smoothing = FALSE;
  if (job->cinfo.image_width > kMaxImageSide ||
      job->cinfo.image_height > kMaxImageSide) {
    return CheckSides(path, job->cinfo.image_height, job->cinfo.image_width);
  }
  jpeg_start_decompress(&job->cinfo);
  const int rows = static_cast<int>(job->cinfo.output_height);
  const int cols = static_cast<int>(job->cinfo.output_width);
  RETURN_IF_ERROR(CheckSides(path, rows, cols));
  if (job->cinfo.output_components != 3) {
    return Undecodable(path, absl::StrCat("decoded to ",
                                          job->cinfo.output_components,
                                          " components, expected RGB"));
  }
  job->rgb.resize(static_cast<size_t>(3) * rows * cols);
  while (job->cinfo.output_scanline < job->cinfo.output_height) {
    JSAMPROW row = job->rgb.data() +
                   static_cast<size_t>(job->cinfo.output_scanline) * 3 * cols;
    jpeg_read_scanlines(&job->cinfo, &row, 1);
  }
  jpeg_finish_decompress(&job->cinfo);
  return FromInterleavedRgb(job->rgb, rows, cols);
}

struct PngJob {
  png_structp png = nullptr;
  png_infop info = nullptr;
  std::string_view bytes;
  size_t offset = 0;
  std::string message;
  std::vector<uint8_t> rgb;
  std::vector<png_bytep> row_pointers;
  ~PngJob() {
    if (png != nullptr) png_destroy_read_struct(&png, &info, nullptr);
  }
};

void PngError(png_structp png, png_const_charp message) {
  auto* job = static_cast<PngJob*>(png_get_error_ptr(png));
  job->message = message;
  png_longjmp(png, 1);
}

void PngWarning(png_structp, png_const_charp) {}

void PngRead(png_structp png, png_bytep out, png_size_t length) {
  auto* job = static_cast<PngJob*>(png_get_io_ptr(png));
  if (job->bytes.size() - job->offset < length) {
    png_error(png, "file is truncated");
  }
  std::memcpy(out, job->bytes.data() + job->offset, length);
  job->offset += length;
}

absl::StatusOr<Image> DecodePng(std::string_view bytes,
                                const std::string& path) {
  auto job = std::make_unique<PngJob>();
  job->bytes = bytes;
  job->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, job.get(), PngError,
                                    PngWarning);
  if (job->png == nullptr) return absl::InternalError("png_create_read_struct");
  job->info = png_create_info_struct(job->png);
  if (job->info == nullptr) return absl::InternalError("png_create_info_struct");
  if (setjmp(png_jmpbuf(job->png)) != 0) {
    return Undecodable(path, job->message);
  }
  png_set_read_fn(job->png, job.get(), PngRead);
  png_read_info(job->png, job->info);
  const png_uint_32 width = png_get_image_width(job->png, job->info);
  const png_uint_32 height = png_get_image_height(job->png, job->info);
  if (width > kMaxImageSide || height > kMaxImageSide) {
    return CheckSides(path, height, width);
  }
  png_set_expand(job->png);  // palette -> RGB, grey < 8 bits -> 8, tRNS -> alpha
  png_set_strip_16(job->png);
  png_set_strip_alpha(job->png);
  png_set_gray_to_rgb(job->png);
  png_set_interlace_handling(job->png);
  png_read_update_info(job->png, job->info);
  if (png_get_channels(job->png, job->info) != 3 ||
      png_get_bit_depth(job->png, job->info) != 8) {
    return Undecodable(path, "PNG did not convert to 8-bit RGB");
  }
  const int rows = static_cast<int>(height);
  const int cols = static_cast<int>(width);
  job->rgb.resize(static_cast<size_t>(3) * rows * cols);
  job->row_pointers.resize(rows);
  for (int r = 0; r < rows; ++r) {
    job->row_pointers[r] = job->rgb.data() + static_cast<size_t>(r) * 3 * cols;
  }
  png_read_image(job->png, job->row_pointers.data());
  png_read_end(job->png, nullptr);
  return FromInterleavedRgb(job->rgb, rows, cols);
}

// PIL's filters.
double BilinearFilter(double x) {
  if (x < 0.0) x = -x;
  if (x < 1.0) return 1.0 - x;
  return 0.0;
}

double BicubicFilter(double x) {
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

constexpr int kPrecisionBits = 32 - 8 - 2;

// For each output position: the first input index and the fixed-point
// weights of the inputs from there.
struct Coefficients {
  std::vector<int> first;
  std::vector<std::vector<int32_t>> weights;
};

Coefficients ComputeCoefficients(int in_size, int out_size, Resample resample) {
  const double support_1 = resample == Resample::kBicubic ? 2.0 : 1.0;
  double (*filter)(double) =
      resample == Resample::kBicubic ? BicubicFilter : BilinearFilter;
  const double scale = static_cast<double>(in_size) / out_size;
  const double filterscale = std::max(scale, 1.0);
  const double support = support_1 * filterscale;
  const double ss = 1.0 / filterscale;
  Coefficients out;
  out.first.resize(out_size);
  out.weights.resize(out_size);
  std::vector<double> k;
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    const int xmin = std::max(static_cast<int>(center - support + 0.5), 0);
    const int xmax =
        std::min(static_cast<int>(center + support + 0.5), in_size) - xmin;
    k.assign(std::max(xmax, 0), 0.0);
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      const double w = filter((x + xmin - center + 0.5) * ss);
      k[x] = w;
      ww += w;
    }
    std::vector<int32_t>& fixed = out.weights[xx];
    fixed.resize(k.size());
    for (size_t x = 0; x < k.size(); ++x) {
      const double v = (ww != 0.0 ? k[x] / ww : k[x]) * (1 << kPrecisionBits);
      fixed[x] = static_cast<int32_t>(v < 0 ? v - 0.5 : v + 0.5);
    }
    out.first[xx] = xmin;
  }
  return out;
}

uint8_t Clip8(int64_t v) {
  v >>= kPrecisionBits;
  return static_cast<uint8_t>(std::clamp<int64_t>(v, 0, 255));
}

// One pass over every plane: along columns (horizontal) or rows.
Image ResamplePass(const Image& in, int out_len, bool horizontal,
                   Resample resample) {
  const int in_len = horizontal ? in.cols : in.rows;
  const Coefficients co = ComputeCoefficients(in_len, out_len, resample);
  Image out;
  out.channels = in.channels;
  out.rows = horizontal ? in.rows : out_len;
  out.cols = horizontal ? out_len : in.cols;
  out.pixels.resize(static_cast<size_t>(out.channels) * out.rows * out.cols);
  const int other = horizontal ? in.rows : in.cols;
  for (int c = 0; c < in.channels; ++c) {
    const uint8_t* src = in.pixels.data() + int64_t{c} * in.rows * in.cols;
    uint8_t* dst = out.pixels.data() + int64_t{c} * out.rows * out.cols;
    for (int o = 0; o < other; ++o) {
      for (int i = 0; i < out_len; ++i) {
        int64_t sum = int64_t{1} << (kPrecisionBits - 1);
        const std::vector<int32_t>& w = co.weights[i];
        for (size_t k = 0; k < w.size(); ++k) {
          const int pos = co.first[i] + static_cast<int>(k);
          const uint8_t p = horizontal ? src[int64_t{o} * in.cols + pos]
                                       : src[int64_t{pos} * in.cols + o];
          sum += int64_t{p} * w[k];
        }
        const uint8_t v = Clip8(sum);
        if (horizontal) {
          dst[int64_t{o} * out.cols + i] = v;
        } else {
          dst[int64_t{i} * out.cols + o] = v;
        }
      }
    }
  }
  return out;
}

absl::Status BadKey(const std::string& path, absl::string_view key,
                    absl::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat(path, ": \"", key, "\" ", why));
}

// A size given as {"height", "width"} or a positive number (both sides).
absl::Status ReadHeightWidth(const nlohmann::json& v, const std::string& path,
                             absl::string_view key, int* rows, int* cols) {
  if (v.is_number_integer()) {
    *rows = *cols = v.get<int>();
  } else if (v.is_object() && v.contains("height") && v.contains("width") &&
             v["height"].is_number_integer() && v["width"].is_number_integer()) {
    *rows = v["height"].get<int>();
    *cols = v["width"].get<int>();
  } else {
    return BadKey(path, key,
                  "must be an integer or {\"height\": H, \"width\": W}");
  }
  if (*rows < 1 || *cols < 1 || *rows > kMaxImageSide || *cols > kMaxImageSide) {
    return BadKey(path, key, absl::StrCat("sides must be in [1, ",
                                          kMaxImageSide, "]"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<double>> ReadTriple(const nlohmann::json& v,
                                               const std::string& path,
                                               absl::string_view key) {
  std::vector<double> out;
  if (v.is_number()) {
    out.assign(3, v.get<double>());
  } else if (v.is_array() && v.size() == 3 &&
             std::all_of(v.begin(), v.end(),
                         [](const nlohmann::json& e) { return e.is_number(); })) {
    for (const nlohmann::json& e : v) out.push_back(e.get<double>());
  } else {
    return BadKey(path, key, "must be a number or a list of 3 numbers");
  }
  return out;
}

absl::StatusOr<bool> ReadBool(const nlohmann::json& j, const std::string& path,
                              const char* key, bool fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  if (!j[key].is_boolean()) return BadKey(path, key, "must be true or false");
  return j[key].get<bool>();
}

}  // namespace

absl::StatusOr<Image> DecodeImage(std::string_view bytes,
                                  const std::string& path) {
  const auto byte = [&](size_t i) {
    return i < bytes.size() ? static_cast<uint8_t>(bytes[i]) : 0;
  };
  if (byte(0) == 0xff && byte(1) == 0xd8 && byte(2) == 0xff) {
    return DecodeJpeg(bytes, path);
  }
  if (bytes.size() >= 8 &&
      png_sig_cmp(reinterpret_cast<png_const_bytep>(bytes.data()), 0, 8) == 0) {
    return DecodePng(bytes, path);
  }
  return Undecodable(path, "not a JPEG or PNG file");
}

absl::StatusOr<Image> DecodeImageFile(const std::string& path) {
  ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(path));
  return DecodeImage(bytes, path);
}

Image Resize(const Image& in, int rows, int cols, Resample resample) {
  Image out = in;
  if (out.cols != cols) out = ResamplePass(out, cols, true, resample);
  if (out.rows != rows) out = ResamplePass(out, rows, false, resample);
  return out;
}

Image CenterCrop(const Image& in, int rows, int cols) {
  Image out;
  out.channels = in.channels;
  out.rows = rows;
  out.cols = cols;
  out.pixels.assign(static_cast<size_t>(in.channels) * rows * cols, 0);
  // Floor division, as Python's //: a window larger than the image puts
  // the image at ceil((rows - in.rows) / 2), as upstream's padding does.
  const auto floor_half = [](int v) { return v >= 0 ? v / 2 : -((-v + 1) / 2); };
  const int top = floor_half(in.rows - rows);
  const int left = floor_half(in.cols - cols);
  for (int c = 0; c < in.channels; ++c) {
    for (int r = 0; r < rows; ++r) {
      const int sr = top + r;
      if (sr < 0 || sr >= in.rows) continue;
      for (int col = 0; col < cols; ++col) {
        const int sc = left + col;
        if (sc < 0 || sc >= in.cols) continue;
        out.pixels[(int64_t{c} * rows + r) * cols + col] = in.at(c, sr, sc);
      }
    }
  }
  return out;
}

Image ToGrey(const Image& in) {
  if (in.channels == 1) return in;
  Image out;
  out.channels = 1;
  out.rows = in.rows;
  out.cols = in.cols;
  const int64_t plane = int64_t{in.rows} * in.cols;
  out.pixels.resize(plane);
  for (int64_t i = 0; i < plane; ++i) {
    const uint32_t r = in.pixels[i];
    const uint32_t g = in.pixels[plane + i];
    const uint32_t b = in.pixels[2 * plane + i];
    out.pixels[i] =
        static_cast<uint8_t>((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16);
  }
  return out;
}

absl::StatusOr<ImagePreprocess> ReadPreprocessorConfig(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": invalid JSON"));
  }
  if (!j.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": must be a JSON object"));
  }
  std::string type;
  const char* type_key = "image_processor_type";
  if (!j.contains(type_key)) type_key = "feature_extractor_type";
  if (j.contains(type_key)) {
    if (!j[type_key].is_string()) return BadKey(path, type_key, "must be a string");
    type = j[type_key].get<std::string>();
  }
  bool clip;
  if (type == "ViTImageProcessor" || type == "ViTFeatureExtractor") {
    clip = false;
  } else if (type == "CLIPImageProcessor" || type == "CLIPFeatureExtractor") {
    clip = true;
  } else {
    return BadKey(path, type_key,
                  absl::StrCat("is '", type,
                               "'; supported: ViTImageProcessor, "
                               "CLIPImageProcessor"));
  }
  ImagePreprocess spec;
  spec.channels = 3;
  if (clip) {
    spec.mean = {0.48145466, 0.4578275, 0.40821073};
    spec.std = {0.26862954, 0.26130258, 0.27577711};
    spec.resample = Resample::kBicubic;
  }
  ASSIGN_OR_RETURN(const bool do_resize, ReadBool(j, path, "do_resize", true));
  if (do_resize) {
    const nlohmann::json size = j.contains("size") ? j["size"] : nlohmann::json(224);
    if (size.is_object() && size.contains("shortest_edge")) {
      if (!size["shortest_edge"].is_number_integer() ||
          size["shortest_edge"].get<int>() < 1 ||
          size["shortest_edge"].get<int>() > kMaxImageSide) {
        return BadKey(path, "size", "shortest_edge must be an integer >= 1");
      }
      spec.shortest_edge = size["shortest_edge"].get<int>();
    } else if (clip && size.is_number_integer()) {
      if (size.get<int>() < 1 || size.get<int>() > kMaxImageSide) {
        return BadKey(path, "size", "must be >= 1");
      }
      spec.shortest_edge = size.get<int>();
    } else {
      RETURN_IF_ERROR(ReadHeightWidth(size, path, "size", &spec.resize_rows,
                                      &spec.resize_cols));
    }
    if (j.contains("resample") && !j["resample"].is_null()) {
      if (!j["resample"].is_number_integer()) {
        return BadKey(path, "resample", "must be an integer (PIL's filter)");
      }
      const int r = j["resample"].get<int>();
      if (r == 2) {
        spec.resample = Resample::kBilinear;
      } else if (r == 3) {
        spec.resample = Resample::kBicubic;
      } else {
        return BadKey(path, "resample",
                      absl::StrCat("is ", r,
                                   "; supported: 2 (bilinear), 3 (bicubic)"));
      }
    }
  }
  ASSIGN_OR_RETURN(const bool do_crop, ReadBool(j, path, "do_center_crop", clip));
  if (do_crop) {
    const nlohmann::json crop =
        j.contains("crop_size") ? j["crop_size"] : nlohmann::json(224);
    RETURN_IF_ERROR(ReadHeightWidth(crop, path, "crop_size", &spec.crop_rows,
                                    &spec.crop_cols));
  }
  ASSIGN_OR_RETURN(const bool do_rescale, ReadBool(j, path, "do_rescale", true));
  double factor = 1.0 / 255.0;
  if (do_rescale && j.contains("rescale_factor")) {
    if (!j["rescale_factor"].is_number() || !(j["rescale_factor"].get<double>() > 0)) {
      return BadKey(path, "rescale_factor", "must be a number > 0");
    }
    factor = j["rescale_factor"].get<double>();
  }
  if (!do_rescale) factor = 1.0;
  ASSIGN_OR_RETURN(const bool do_normalize, ReadBool(j, path, "do_normalize", true));
  if (do_normalize) {
    if (j.contains("image_mean")) {
      ASSIGN_OR_RETURN(spec.mean, ReadTriple(j["image_mean"], path, "image_mean"));
    }
    if (j.contains("image_std")) {
      ASSIGN_OR_RETURN(spec.std, ReadTriple(j["image_std"], path, "image_std"));
    }
    for (double s : spec.std) {
      if (!(s > 0)) return BadKey(path, "image_std", "entries must be > 0");
    }
  } else {
    spec.mean = {0.0, 0.0, 0.0};
    spec.std = {1.0, 1.0, 1.0};
  }
  if (factor != 1.0 / 255.0) {
    const double k = 255.0 * factor;
    for (double& m : spec.mean) m /= k;
    for (double& s : spec.std) s /= k;
  }
  return spec;
}

absl::StatusOr<Image> Preprocess(const Image& in, const ImagePreprocess& spec) {
  if (spec.channels != 1 && spec.channels != 3) {
    return absl::InvalidArgumentError(absl::StrCat(
        "image preprocessing: channels must be 1 or 3, got ", spec.channels));
  }
  if (in.channels != 3) {
    return absl::InvalidArgumentError(absl::StrCat(
        "image preprocessing: expected a decoded RGB image, got ", in.channels,
        " channels"));
  }
  Image out = spec.channels == 1 ? ToGrey(in) : in;
  if (spec.resize_rows > 0 && spec.resize_cols > 0) {
    out = Resize(out, spec.resize_rows, spec.resize_cols, spec.resample);
  } else if (spec.shortest_edge > 0) {
    const bool tall = out.rows >= out.cols;
    const int64_t shorter = tall ? out.cols : out.rows;
    const int64_t longer = tall ? out.rows : out.cols;
    const int new_long =
        static_cast<int>(std::max<int64_t>(1, spec.shortest_edge * longer / shorter));
    out = Resize(out, tall ? new_long : spec.shortest_edge,
                 tall ? spec.shortest_edge : new_long, spec.resample);
  }
  if (spec.crop_rows > 0 && spec.crop_cols > 0) {
    out = CenterCrop(out, spec.crop_rows, spec.crop_cols);
  }
  return out;
}

}  // namespace layerfl

#include "common/data/image_folder.h"

#include <algorithm>
#include <filesystem>
#include <string>
#include <system_error>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/data/file.h"
#include "common/util/status_macros.h"

namespace layerfl {
namespace {

namespace fs = std::filesystem;

absl::Status FsError(const std::error_code& ec, const std::string& what,
                     const std::string& path) {
  return absl::Status(absl::ErrnoToStatusCode(ec.value()),
                      absl::StrCat(what, " ", path, ": ", ec.message()));
}

bool IsImageName(const std::string& name) {
  const std::string lower = absl::AsciiStrToLower(name);
  return absl::EndsWith(lower, ".jpg") || absl::EndsWith(lower, ".jpeg") ||
         absl::EndsWith(lower, ".png");
}

// The visible entries of `dir` that are directories (want_dirs) or regular
// files (following symlinks), sorted bytewise.
absl::StatusOr<std::vector<std::string>> Entries(const fs::path& dir,
                                                 bool want_dirs) {
  std::vector<std::string> out;
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  if (ec) return FsError(ec, "cannot list directory", dir.string());
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.empty() || name[0] == '.') continue;
    std::error_code type_ec;
    const bool is_dir = fs::is_directory(it->path(), type_ec);
    const bool is_file = fs::is_regular_file(it->path(), type_ec);
    if (want_dirs ? is_dir : is_file) out.push_back(name);
  }
  if (ec) return FsError(ec, "cannot list directory", dir.string());
  std::sort(out.begin(), out.end());
  return out;
}

absl::Status ListClasses(const fs::path& dir, const std::string& group,
                         std::vector<ImageFile>& out) {
  ASSIGN_OR_RETURN(std::vector<std::string> classes, Entries(dir, true));
  for (const std::string& class_name : classes) {
    ASSIGN_OR_RETURN(std::vector<std::string> files,
                     Entries(dir / class_name, false));
    for (const std::string& name : files) {
      if (!IsImageName(name)) continue;
      ImageFile f;
      f.path = (dir / class_name / name).string();
      f.relative = group.empty() ? absl::StrCat(class_name, "/", name)
                                 : absl::StrCat(group, "/", class_name, "/", name);
      f.group = group;
      f.class_name = class_name;
      out.push_back(std::move(f));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<ImageFile>> ListImageFolder(const std::string& root,
                                                       bool grouped) {
  std::error_code ec;
  if (!fs::is_directory(root, ec)) {
    return absl::NotFoundError(
        absl::StrCat("image folder ", root, " is not a directory"));
  }
  std::vector<ImageFile> out;
  if (grouped) {
    ASSIGN_OR_RETURN(std::vector<std::string> groups, Entries(root, true));
    for (const std::string& group : groups) {
      RETURN_IF_ERROR(ListClasses(fs::path(root) / group, group, out));
    }
  } else {
    RETURN_IF_ERROR(ListClasses(root, "", out));
  }
  if (out.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "image folder ", root, " holds no .jpg/.jpeg/.png file in ",
        grouped ? "<group>/<class>/" : "<class>/", " directories"));
  }
  return out;
}

absl::StatusOr<ImageSet> LoadImageFiles(const std::vector<ImageFile>& files,
                                        const LabelMap& labels,
                                        const ImagePreprocess& spec) {
  if (files.empty()) {
    return absl::InvalidArgumentError("no image files to load");
  }
  ImageSet set;
  set.mean = spec.mean;
  set.std = spec.std;
  set.mean.resize(spec.channels);
  set.std.resize(spec.channels);
  for (size_t i = 0; i < files.size(); ++i) {
    const ImageFile& f = files[i];
    absl::StatusOr<int> label = labels.Id(f.class_name);
    if (!label.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "class directory ", fs::path(f.path).parent_path().string(),
          ": \"", f.class_name, "\" is not one of the run's labels"));
    }
    ASSIGN_OR_RETURN(Image decoded, DecodeImageFile(f.path));
    absl::StatusOr<Image> image = Preprocess(decoded, spec);
    if (!image.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(f.path, ": ", image.status().message()));
    }
    if (i == 0) {
      set.channels = image->channels;
      set.rows = image->rows;
      set.cols = image->cols;
      set.pixels.reserve(files.size() * set.image_bytes());
    } else if (image->channels != set.channels || image->rows != set.rows ||
               image->cols != set.cols) {
      return absl::InvalidArgumentError(absl::StrCat(
          f.path, ": preprocessed to ", image->cols, "x", image->rows, "x",
          image->channels, ", but ", files[0].path, " to ", set.cols, "x",
          set.rows, "x", set.channels,
          "; every input must have one size (resize to a fixed size or crop)"));
    }
    set.pixels.insert(set.pixels.end(), image->pixels.begin(),
                      image->pixels.end());
    set.labels.push_back(*label);
  }
  return set;
}

absl::Status CopyImageFiles(const std::vector<ImageFile>& files,
                            const LabelMap& labels, const std::string& dir) {
  for (const ImageFile& f : files) {
    ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(f.path));
    RETURN_IF_ERROR(
        WriteFileAtomically((fs::path(dir) / f.relative).string(), bytes));
  }
  return WriteLabelsFile(labels, (fs::path(dir) / "labels.txt").string());
}

}  // namespace layerfl

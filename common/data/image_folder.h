#ifndef LAYERFL_COMMON_DATA_IMAGE_FOLDER_H_
#define LAYERFL_COMMON_DATA_IMAGE_FOLDER_H_

// Image folders: one directory per class of JPEG/PNG files, optionally one
// more level of groups above the classes (root/<group>/<class>/<file>).

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/data/idx.h"
#include "common/data/image.h"
#include "common/data/records.h"

namespace layerfl {

struct ImageFile {
  std::string path;      // the file, root joined with `relative`
  std::string relative;  // [group/]class/name
  std::string group;     // empty unless the folder is grouped
  std::string class_name;
};

// The images under `root`: root/<class>/<file>, or when `grouped`
// root/<group>/<class>/<file>. Files whose names end in .jpg, .jpeg or .png
// (any case) count; other files, entries whose names start with '.', and
// files at a level above the classes are ignored. Ordered by (group, class,
// file name), each bytewise, so a subset of the files listed again from a
// copy keeps its relative order. Errors: NotFound when `root` is not a
// directory; InvalidArgument naming `root` when it holds no image, or the
// errno-derived code naming a directory that cannot be read.
absl::StatusOr<std::vector<ImageFile>> ListImageFolder(const std::string& root,
                                                       bool grouped);

// Decodes and preprocesses `files` into one set: label = labels.Id(class),
// channels and normalisation from `spec`. Errors: InvalidArgument naming the
// class directory when its name is not in `labels`; the decoder's errors,
// naming the file; InvalidArgument naming the file when its preprocessed
// size differs from the first file's (e.g. a shortest-edge resize without a
// crop); InvalidArgument when `files` is empty.
absl::StatusOr<ImageSet> LoadImageFiles(const std::vector<ImageFile>& files,
                                        const LabelMap& labels,
                                        const ImagePreprocess& spec);

// Copies `files` byte for byte to dir/<relative> and writes dir/labels.txt
// (`labels`, id order): a client's share, which ListImageFolder(dir, grouped)
// lists in the same order. Errors carry the errno-derived code and name the
// file.
absl::Status CopyImageFiles(const std::vector<ImageFile>& files,
                            const LabelMap& labels, const std::string& dir);

}  // namespace layerfl

#endif  // LAYERFL_COMMON_DATA_IMAGE_FOLDER_H_

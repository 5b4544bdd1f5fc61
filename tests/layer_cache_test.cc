// The client daemon's download cache (client/daemon/layer_cache.h): layers
// stored as they arrive come back as a partial download, a layer's newer
// version replaces the older, another run's layers are dropped, and a
// damaged or foreign file is skipped and removed, never returned.
#include "client/daemon/layer_cache.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "tests/weights_matchers.h"

namespace layerfl {
namespace {

namespace fs = std::filesystem;

LayerWeights Layer(const std::string& group, int64_t version, float first) {
  LayerWeights l;
  l.group = group;
  l.version = version;
  l.tensors.push_back({group + ".weight", {2, 3}, {first, 1, 2, 3, 4, 5}});
  l.tensors.push_back({group + ".bias", {2}, {-first, 0.5f}});
  return l;
}

class LayerCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/layer_cache_test_" +
           std::to_string(getpid());
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::unique_ptr<LayerCache> Open() {
    absl::StatusOr<std::unique_ptr<LayerCache>> cache =
        CreateFileLayerCache(dir_);
    EXPECT_TRUE(cache.ok()) << cache.status();
    return cache.ok() ? *std::move(cache) : nullptr;
  }

  std::string dir_;
};

TEST_F(LayerCacheTest, StoredLayersComeBackBitForBitAfterARestart) {
  {
    std::unique_ptr<LayerCache> cache = Open();
    ASSERT_TRUE(cache->Put("run-a", Layer("embed", 0, 1.5f)).ok());
    ASSERT_TRUE(cache->Put("run-a", Layer("blocks/0 x", 0, 2.5f)).ok());
    ASSERT_TRUE(cache->Put("run-a", Layer("embed", 4, 7.25f)).ok());
  }
  absl::StatusOr<Replica> loaded = Open()->Load();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_TRUE(loaded->run_id.empty());
  EXPECT_EQ(loaded->partial_run_id, "run-a");
  ASSERT_EQ(loaded->partial.size(), 2u);
  ExpectBitIdentical(
      ModelWeights{{loaded->partial.at("embed"),
                    loaded->partial.at("blocks/0 x")}},
      ModelWeights{{Layer("embed", 4, 7.25f), Layer("blocks/0 x", 0, 2.5f)}});
  // Names outside [A-Za-z0-9._-] are escaped in the file name.
  EXPECT_TRUE(fs::exists(dir_ + "/blocks%2F0%20x.layer"));
}

TEST_F(LayerCacheTest, AnotherRunsLayersAreDropped) {
  std::unique_ptr<LayerCache> cache = Open();
  ASSERT_TRUE(cache->Put("run-a", Layer("embed", 0, 1)).ok());
  ASSERT_TRUE(cache->Put("run-a", Layer("head", 0, 1)).ok());
  ASSERT_TRUE(cache->Put("run-b", Layer("head", 2, 3)).ok());
  absl::StatusOr<Replica> loaded = Open()->Load();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->partial_run_id, "run-b");
  ASSERT_EQ(loaded->partial.size(), 1u);
  EXPECT_EQ(loaded->partial.at("head").version, 2);
}

TEST_F(LayerCacheTest, DamagedFilesAreSkippedAndRemoved) {
  std::unique_ptr<LayerCache> cache = Open();
  ASSERT_TRUE(cache->Put("run-a", Layer("embed", 0, 1)).ok());
  ASSERT_TRUE(cache->Put("run-a", Layer("head", 0, 1)).ok());
  ASSERT_TRUE(cache->Put("run-a", Layer("mid", 0, 1)).ok());
  // A truncated file, a flipped byte, and a file that is not the cache's.
  fs::resize_file(dir_ + "/embed.layer", fs::file_size(dir_ + "/embed.layer") - 3);
  {
    std::fstream f(dir_ + "/head.layer",
                   std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(30);
    f.put('\x7f');
  }
  std::ofstream(dir_ + "/stray.layer") << "not a layer";
  absl::StatusOr<Replica> loaded = Open()->Load();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_EQ(loaded->partial.size(), 1u);
  EXPECT_TRUE(loaded->partial.count("mid"));
  EXPECT_FALSE(fs::exists(dir_ + "/embed.layer"));
  EXPECT_FALSE(fs::exists(dir_ + "/head.layer"));
  EXPECT_FALSE(fs::exists(dir_ + "/stray.layer"));
}

TEST_F(LayerCacheTest, AFileInTheWayOfTheDirectoryIsRefusedNamingIt) {
  std::ofstream(dir_) << "x";
  absl::StatusOr<std::unique_ptr<LayerCache>> cache =
      CreateFileLayerCache(dir_);
  ASSERT_FALSE(cache.ok());
  EXPECT_THAT(cache.status().message(),
              ::testing::HasSubstr("--download_cache_dir: cannot use '" +
                                   dir_ + "'"));
  fs::remove(dir_);
}

}  // namespace
}  // namespace layerfl

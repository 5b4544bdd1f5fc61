// ReadCgroupLimits on cgroup trees laid out as a host and a container show
// them (v1 and v2), written by the test.

#include "common/util/cgroup.h"

#include <filesystem>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace layerfl {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

class CgroupTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::path(::testing::TempDir()) /
            ::testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void Write(const std::string& rel, const std::string& text) {
    const fs::path p = root_ / rel;
    fs::create_directories(p.parent_path());
    std::ofstream(p) << text;
  }
  absl::StatusOr<CgroupLimits> Read() {
    return ReadCgroupLimits((root_ / "sys").string(),
                            (root_ / "proc_self_cgroup").string());
  }
  fs::path root_;
};

// A container on a cgroup v1 host (docker's default there): its cgroup is
// mounted at the top; /proc/self/cgroup names a path that is not mounted.
TEST_F(CgroupTest, V1ContainerReadsTheMountsTop) {
  Write("proc_self_cgroup",
        "4:memory:/docker/abc\n1:cpu,cpuacct:/docker/abc\n0::/\n");
  Write("sys/memory/memory.limit_in_bytes", "1073741824\n");
  Write("sys/cpu/cpu.cfs_quota_us", "150000\n");
  Write("sys/cpu/cpu.cfs_period_us", "100000\n");
  auto l = Read();
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(l->memory_bytes, int64_t{1} << 30);
  EXPECT_EQ(l->cpus, 1.5);
  EXPECT_EQ(l->memory_file, (root_ / "sys/memory/memory.limit_in_bytes").string());
}

// A process on a v1 host: its own cgroup's files win over the top's.
TEST_F(CgroupTest, V1HostReadsItsOwnCgroup) {
  Write("proc_self_cgroup", "4:memory:/jobs/j1\n1:cpu:/\n");
  Write("sys/memory/memory.limit_in_bytes", "9223372036854771712\n");
  Write("sys/memory/jobs/j1/memory.limit_in_bytes", "536870912\n");
  Write("sys/cpu/cpu.cfs_quota_us", "-1\n");
  Write("sys/cpu/cpu.cfs_period_us", "100000\n");
  auto l = Read();
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(l->memory_bytes, int64_t{512} << 20);
  EXPECT_FALSE(l->cpus.has_value());  // -1: no quota
}

TEST_F(CgroupTest, V2LimitsAndMax) {
  Write("proc_self_cgroup", "0::/user.slice/job\n");
  Write("sys/user.slice/job/memory.max", "268435456\n");
  Write("sys/user.slice/job/cpu.max", "50000 100000\n");
  auto l = Read();
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(l->memory_bytes, int64_t{256} << 20);
  EXPECT_EQ(l->cpus, 0.5);

  Write("sys/user.slice/job/memory.max", "max\n");
  Write("sys/user.slice/job/cpu.max", "max 100000\n");
  l = Read();
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_FALSE(l->memory_bytes.has_value());
  EXPECT_FALSE(l->cpus.has_value());
}

TEST_F(CgroupTest, NoCgroupFilesMeanNoLimits) {
  auto l = Read();
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_FALSE(l->memory_bytes.has_value());
  EXPECT_FALSE(l->cpus.has_value());
  EXPECT_EQ(l->memory_file, "");
}

TEST_F(CgroupTest, AFileThatDoesNotParseIsNamed) {
  Write("proc_self_cgroup", "0::/\n");
  Write("sys/memory.max", "lots\n");
  auto l = Read();
  EXPECT_EQ(l.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(l.status().message(), HasSubstr("memory.max"));
  EXPECT_THAT(l.status().message(), HasSubstr("'lots'"));
  Write("sys/memory.max", "max\n");
  Write("sys/cpu.max", "100000\n");
  l = Read();
  EXPECT_THAT(l.status().message(), HasSubstr("cpu.max"));
}

TEST(CgroupBudgetTest, ThreeQuartersOfWhatIsLeft) {
  // 1 GiB device, 200 MiB resident: 0.75 * 824 MiB = 618 MiB.
  EXPECT_EQ(CgroupBudgetMb(int64_t{1} << 30, int64_t{200} << 20), 618.0);
  EXPECT_EQ(CgroupBudgetMb(int64_t{100} << 20, int64_t{200} << 20), 0.0);
}

}  // namespace
}  // namespace layerfl

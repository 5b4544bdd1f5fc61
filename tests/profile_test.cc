// The trainer's measurements: exact tensor-memory counting, and the
// per-machine training profile against what training each set of groups
// really takes.

#include "common/trainer/profile.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_join.h"
#include "common/trainer/memory_meter.h"
#include "common/trainer/trainer.h"
#include "tests/trainer_fixtures.h"

namespace layerfl {
namespace {

TEST(TensorMemoryMeterTest, CountsEveryTensorByteExactly) {
  TensorMemoryMeter meter;
  {
    torch::Tensor a = torch::empty({1000}, torch::kFloat);  // 4000 bytes
    EXPECT_EQ(meter.current_bytes(), 4000);
    torch::Tensor b = torch::empty({250}, torch::kDouble);  // 2000 bytes
    EXPECT_EQ(meter.current_bytes(), 6000);
  }
  EXPECT_EQ(meter.current_bytes(), 0);
  EXPECT_EQ(meter.peak_bytes(), 6000);
  meter.ResetPeak();
  torch::Tensor c = torch::empty({10}, torch::kFloat);
  EXPECT_EQ(meter.peak_bytes(), 40);
}

// Every subset of groups as names.
std::vector<std::vector<int>> AllSets(int g) {
  std::vector<std::vector<int>> sets;
  for (int mask = 1; mask < (1 << g); ++mask) {
    std::vector<int> s;
    for (int l = 0; l < g; ++l) {
      if (mask >> l & 1) s.push_back(l);
    }
    sets.push_back(s);
  }
  return sets;
}

double Predict(const std::vector<double>& w, const std::vector<double>& a,
               double fixed, const std::vector<int>& set) {
  double v = fixed;
  for (int l : set) v += w[l];
  for (size_t l = set[0]; l < a.size(); ++l) v += a[l];
  return v;
}

// A 5-group ViT, random images and the profile measured on them, once for
// the tests that compare what training and scoring take with it.
class ProfiledVitTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto created = CreateModel(SmallVit(), 3);
    ASSERT_TRUE(created.ok()) << created.status();
    model_ = created->release();
    data_ = new Examples(RandomImages(64, 1));
    absl::StatusOr<TrainingProfile> measured =
        ProfileTraining(*model_, *data_, Sgd(5, 16), ImportanceConfig());
    ASSERT_TRUE(measured.ok()) << measured.status();
    profile_ = new TrainingProfile(*std::move(measured));
  }
  static void TearDownTestSuite() {
    delete profile_;
    delete data_;
    delete model_;
  }
  static Model* model_;
  static Examples* data_;
  static TrainingProfile* profile_;
};
Model* ProfiledVitTest::model_ = nullptr;
Examples* ProfiledVitTest::data_ = nullptr;
TrainingProfile* ProfiledVitTest::profile_ = nullptr;

TEST_F(ProfiledVitTest, PredictsThePeakMemoryOfEverySet) {
  ASSERT_NE(profile_, nullptr);
  const auto& model = model_;
  const Examples& data = *data_;
  const TrainConfig train = Sgd(5, 16);
  ImportanceConfig importance;
  const TrainingProfile* p = profile_;
  ASSERT_TRUE(p->Validate().ok());
  const int g = static_cast<int>(p->groups.size());
  std::vector<double> wb(p->per_group_bytes.begin(), p->per_group_bytes.end());
  std::vector<double> ab(p->depth_bytes.begin(), p->depth_bytes.end());
  const SelectiveTrainer trainer(train, importance);
  double worst = 0;
  for (const std::vector<int>& set : AllSets(g)) {
    std::vector<std::string> names;
    for (int l : set) names.push_back(p->groups[l]);
    absl::StatusOr<TrainResult> r = trainer.Train(*model, data, names, 7);
    ASSERT_TRUE(r.ok()) << r.status();
    const double predicted =
        Predict(wb, ab, static_cast<double>(p->fixed_bytes), set);
    const double ratio = r->usage.peak_bytes / predicted;
    worst = std::max(worst, ratio);
    // The guarantee budgets rely on: never above the prediction...
    EXPECT_LE(r->usage.peak_bytes, predicted) << absl::StrJoin(names, ",");
    // ...and not a loose bound either (exact here: the depth-aware form is
    // how LibTorch's training memory adds up).
    EXPECT_GE(ratio, 0.99) << absl::StrJoin(names, ",");
  }
  RecordProperty("worst_measured_over_predicted_ppm",
                 static_cast<int>(worst * 1e6));
}

TEST(TrainingProfileTest, IsCachedPerMachineAndModel) {
  auto model = CreateModel(SmallVit(), 3);
  ASSERT_TRUE(model.ok());
  const Examples data = RandomImages(32, 2);
  const std::string dir = testing::TempDir() + "/profile_cache";
  std::filesystem::remove_all(dir);
  ImportanceConfig importance;
  absl::StatusOr<TrainingProfile> first = CachedTrainingProfile(
      dir, **model, data, Sgd(5, 16), importance, /*threads=*/1);
  ASSERT_TRUE(first.ok()) << first.status();
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    (void)e;
    ++files;
  }
  EXPECT_EQ(files, 2);  // the profile, and its training part on its own
  absl::StatusOr<TrainingProfile> again = CachedTrainingProfile(
      dir, **model, data, Sgd(5, 16), importance, /*threads=*/1);
  ASSERT_TRUE(again.ok());
  // Read back, not re-measured: times are noisy, so equal values prove it.
  EXPECT_EQ(again->Serialize(), first->Serialize());
  // Another batch size is another profile.
  absl::StatusOr<TrainingProfile> other = CachedTrainingProfile(
      dir, **model, data, Sgd(5, 8), importance, /*threads=*/1);
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(other->batch_size, 8);
  files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    (void)e;
    ++files;
  }
  EXPECT_EQ(files, 4);
  // Another scoring configuration takes the training costs as cached and
  // measures only its scoring pass.
  ImportanceConfig rgn;
  rgn.metric = "rgn";
  rgn.batches = 1;
  absl::StatusOr<TrainingProfile> scored_otherwise = CachedTrainingProfile(
      dir, **model, data, Sgd(5, 16), rgn, /*threads=*/1);
  ASSERT_TRUE(scored_otherwise.ok()) << scored_otherwise.status();
  EXPECT_EQ(scored_otherwise->step_fixed_s, first->step_fixed_s);
  EXPECT_EQ(scored_otherwise->step_per_group_s, first->step_per_group_s);
  EXPECT_EQ(scored_otherwise->step_depth_s, first->step_depth_s);
  EXPECT_NE(scored_otherwise->scoring_s, first->scoring_s);
  // A damaged file is measured again, not trusted.
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    std::ofstream(e.path()) << "groups=embed batch_size=zero";
  }
  absl::StatusOr<TrainingProfile> remeasured = CachedTrainingProfile(
      dir, **model, data, Sgd(5, 16), importance, /*threads=*/1);
  ASSERT_TRUE(remeasured.ok()) << remeasured.status();
  EXPECT_EQ(remeasured->fixed_bytes, first->fixed_bytes);
}

TEST(TrainingProfileTest, SerializeParseRoundTripAndRefusals) {
  TrainingProfile p;
  p.groups = {"embed", "head"};
  p.batch_size = 32;
  p.threads = 2;
  p.step_fixed_s = 0.1 / 3;
  p.step_per_group_s = {1e-3, 2.5e-4};
  p.step_depth_s = {0, 7e-4};
  p.scoring_s = 0.05;
  p.fixed_bytes = 1000;
  p.per_group_bytes = {10, 20};
  p.depth_bytes = {0, 30};
  p.scoring_bytes = {2000, 1500};
  absl::StatusOr<TrainingProfile> q = TrainingProfile::Parse(p.Serialize());
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->Serialize(), p.Serialize());
  EXPECT_EQ(q->step_fixed_s, p.step_fixed_s);  // bit-exact
  p.step_depth_s = {0};
  EXPECT_THAT(
      std::string(p.Validate().message()),
      ::testing::HasSubstr("profile.step_depth_s: 1 values for 2 groups"));
  p.step_depth_s = {0, -1};
  EXPECT_THAT(std::string(p.Validate().message()),
              ::testing::HasSubstr(
                  "profile.step_depth_s[1]: must be finite and >= 0, got -1"));
  p.step_depth_s = {0, 7e-4};
  p.scoring_bytes = {2000};
  EXPECT_THAT(
      std::string(p.Validate().message()),
      ::testing::HasSubstr("profile.scoring_bytes: 1 values for 2 groups"));
  // A cache file from before scoring_bytes is refused (and re-measured).
  std::string old = q->Serialize();
  old = old.substr(0, old.find(" scoring_bytes="));
  EXPECT_THAT(std::string(TrainingProfile::Parse(old).status().message()),
              ::testing::HasSubstr("profile: no scoring_bytes"));
}

// The lowest group a memory limit can score from, by hand.
TEST(TrainingProfileTest, LowestScorableGroupByHand) {
  TrainingProfile p;
  p.scoring_bytes = {900, 700, 700, 400};
  EXPECT_EQ(LowestScorableGroup(p, 0), 0);     // no limit
  EXPECT_EQ(LowestScorableGroup(p, 900), 0);
  EXPECT_EQ(LowestScorableGroup(p, 899), 1);
  EXPECT_EQ(LowestScorableGroup(p, 700), 1);
  EXPECT_EQ(LowestScorableGroup(p, 500), 3);
  EXPECT_EQ(LowestScorableGroup(p, 399), 4);   // nothing fits
  p.scoring_bytes.clear();                      // not measured: no limit
  EXPECT_EQ(LowestScorableGroup(p, 399), 0);
}

// What each scoring depth takes fits what the profile prices it at
// (scoring_from_s, medians of 5 against the profile's medians; 2x + 2 ms
// of slack for a shared machine), and a shallower pass is cheaper.
TEST_F(ProfiledVitTest, ScoringFromEachGroupTakesWhatItIsPriced) {
  ASSERT_NE(profile_, nullptr);
  const TrainingProfile* p = profile_;
  const int g = static_cast<int>(p->groups.size());
  ASSERT_EQ(p->scoring_from_s.size(), static_cast<size_t>(g));
  EXPECT_EQ(ScoringSeconds(*p, 0), p->scoring_s);
  EXPECT_EQ(ScoringSeconds(*p, g), 0.0);
  const SelectiveTrainer trainer(Sgd(5, 16), ImportanceConfig());
  for (int l = 1; l < g; ++l) {
    EXPECT_EQ(ScoringSeconds(*p, l), p->scoring_from_s[l]);
    std::vector<double> times;
    for (int r = 0; r < 5; ++r) {
      ResourceUsage usage;
      ASSERT_TRUE(
          trainer.Importance(*model_, *data_, 20 + r, &usage, l).ok());
      times.push_back(usage.seconds);
    }
    std::sort(times.begin(), times.end());
    EXPECT_LE(times[2], 2 * p->scoring_from_s[l] + 0.002) << l;
  }
  // The head alone skips the backward through every block.
  EXPECT_LT(p->scoring_from_s[g - 1], p->scoring_s);
}

// A cache file from before scoring_from_s keeps its other fields and gets
// the per-depth pass measured and added.
TEST_F(ProfiledVitTest, ACachedProfileWithoutThePerDepthPassIsUpgraded) {
  const std::string dir =
      (std::filesystem::temp_directory_path() / "layerfl_profile_upgrade")
          .string();
  std::filesystem::remove_all(dir);
  absl::StatusOr<TrainingProfile> first = CachedTrainingProfile(
      dir, *model_, *data_, Sgd(5, 16), ImportanceConfig(), 1);
  ASSERT_TRUE(first.ok()) << first.status();
  std::string file;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().filename().string().rfind("profile-", 0) == 0) {
      file = entry.path().string();
    }
  }
  std::ifstream in(file);
  std::string text((std::istreambuf_iterator<char>(in)),
                   std::istreambuf_iterator<char>());
  in.close();
  TrainingProfile old = *first;
  old.scoring_from_s.clear();
  old.step_fixed_s = 123.0;  // marks the old file's values
  std::ofstream(file, std::ios::trunc) << old.Serialize();
  absl::StatusOr<TrainingProfile> upgraded = CachedTrainingProfile(
      dir, *model_, *data_, Sgd(5, 16), ImportanceConfig(), 1);
  ASSERT_TRUE(upgraded.ok()) << upgraded.status();
  EXPECT_EQ(upgraded->step_fixed_s, 123.0);
  EXPECT_EQ(upgraded->scoring_from_s.size(), old.groups.size());
  absl::StatusOr<TrainingProfile> reread = CachedTrainingProfile(
      dir, *model_, *data_, Sgd(5, 16), ImportanceConfig(), 1);
  ASSERT_TRUE(reread.ok());
  EXPECT_EQ(reread->scoring_from_s, upgraded->scoring_from_s);
  std::filesystem::remove_all(dir);
}

// What each scoring depth peaks at is what the profile says, and the scores
// of the groups scored are those of the whole pass.
TEST_F(ProfiledVitTest, ScoringFromEachGroupPeaksAsProfiled) {
  ASSERT_NE(profile_, nullptr);
  const auto& model = model_;
  const Examples& data = *data_;
  const TrainConfig train = Sgd(5, 16);
  ImportanceConfig importance;
  const TrainingProfile* p = profile_;
  const int g = static_cast<int>(p->groups.size());
  const SelectiveTrainer trainer(train, importance);
  ResourceUsage full_usage;
  absl::StatusOr<std::vector<LayerScores>> full =
      trainer.Importance(*model, data, 11, &full_usage);
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_EQ(full_usage.peak_bytes, p->scoring_bytes[0]);
  for (int l = 1; l < g; ++l) {
    ResourceUsage usage;
    absl::StatusOr<std::vector<LayerScores>> part =
        trainer.Importance(*model, data, 11, &usage, l);
    ASSERT_TRUE(part.ok()) << part.status();
    EXPECT_EQ(usage.peak_bytes, p->scoring_bytes[l]) << l;
    // Shallower is cheaper: the backward stops at l.
    EXPECT_LT(p->scoring_bytes[l], p->scoring_bytes[l - 1]) << l;
    for (int k = 0; k < g; ++k) {
      if (k < l) {
        EXPECT_EQ((*part)[k].sq_grad_norm, 0.0) << l << " " << k;
        EXPECT_EQ((*part)[k].snr, 0.0);
      } else {
        // The same gradients: the scored groups' scores do not depend on
        // how deep the backward goes.
        EXPECT_EQ((*part)[k].sq_grad_norm, (*full)[k].sq_grad_norm) << l;
        EXPECT_EQ((*part)[k].rgn, (*full)[k].rgn) << l;
        EXPECT_EQ((*part)[k].snr, (*full)[k].snr) << l;
      }
    }
  }
  ResourceUsage none;
  absl::StatusOr<std::vector<LayerScores>> nothing =
      trainer.Importance(*model, data, 11, &none, g);
  ASSERT_TRUE(nothing.ok()) << nothing.status();
  for (const LayerScores& s : *nothing) EXPECT_EQ(s.sq_grad_norm, 0.0);
  EXPECT_EQ(none.peak_bytes, ParameterBytes(*model));
  EXPECT_THAT(std::string(trainer.Importance(*model, data, 11, nullptr, g + 1)
                              .status()
                              .message()),
              ::testing::HasSubstr("lowest group 6 is outside [0, 5]"));
}

}  // namespace
}  // namespace layerfl

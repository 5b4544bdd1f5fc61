#ifndef LAYERFL_TESTS_TRAINER_FIXTURES_H_
#define LAYERFL_TESTS_TRAINER_FIXTURES_H_

// Small models and data for the LibTorch tests (trainer_test, profile_test).

#include <torch/torch.h>

#include <cstdint>

#include "common/trainer/trainer.h"
#include "common/config/config.h"

namespace layerfl {

// A 3-block ViT on 28x28 images: groups embed, block0..block2, head.
inline ModelConfig SmallVit() {
  ModelConfig c;
  c.dim = 16;
  c.depth = 3;
  c.heads = 2;
  c.mlp_dim = 32;
  c.num_classes = 10;
  return c;
}

inline Examples RandomImages(int64_t n, uint64_t seed) {
  torch::manual_seed(seed);
  return {torch::randn({n, 1, 28, 28}),
          torch::randint(0, 10, {n}, torch::kLong)};
}

// SGD with momentum 0.9 at lr 0.05.
inline TrainConfig Sgd(int steps, int batch) {
  TrainConfig t;
  t.optimizer = "sgd";
  t.lr = 0.05;
  t.momentum = 0.9;
  t.local_steps = steps;
  t.batch_size = batch;
  return t;
}

}  // namespace layerfl

#endif  // LAYERFL_TESTS_TRAINER_FIXTURES_H_

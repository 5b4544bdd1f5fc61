#ifndef LAYERFL_CLIENT_TRAINER_EXAMPLES_H_
#define LAYERFL_CLIENT_TRAINER_EXAMPLES_H_

// Conversion of the torch-free data sets into tensors the trainer consumes.

#include "client/trainer/trainer.h"
#include "common/data/idx.h"
#include "common/data/text.h"

namespace layerfl {

// Fashion-MNIST normalisation (mean and std of the training pixels / 255).
inline constexpr double kFashionMnistMean = 0.2860;
inline constexpr double kFashionMnistStd = 0.3530;

// Images -> float [N, 1, rows, cols], (p/255 - mean) / std; labels int64.
Examples ImagesToExamples(const ImageSet& set);

// Token ids -> int64 [N, max_len]; labels int64.
Examples TextToExamples(const TextSet& set);

}  // namespace layerfl

#endif  // LAYERFL_CLIENT_TRAINER_EXAMPLES_H_

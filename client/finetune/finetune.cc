#include "client/finetune/finetune.h"

#include <chrono>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/trainer/examples.h"
#include "common/trainer/pretrain.h"
#include "common/trainer/trainer.h"
#include "common/data/federated_data.h"
#include "common/util/status_macros.h"

namespace layerfl {

absl::StatusOr<FinetuneSummary> RunFinetuneDemo(const RunConfig& c,
                                                std::ostream& out) {
  SetTorchThreads(c.threads);
  TuneMallocForTraining();
  ASSIGN_OR_RETURN(FederatedImages data, BuildFederatedImages(c));
  ASSIGN_OR_RETURN(NamedTensors pretrained,
                   EnsurePretrained(c, data.holdout, &out));
  const ImageSet& client = data.clients[c.demo.client];
  const Examples train = ImagesToExamples(client);
  const Examples test = ImagesToExamples(data.test);
  SelectiveTrainer trainer(c.train, c.importance);

  FinetuneSummary summary;
  for (bool from_pretrained : {true, false}) {
    ASSIGN_OR_RETURN(std::unique_ptr<Model> model,
                     CreateModel(c.model, c.seed));
    if (from_pretrained) {
      RETURN_IF_ERROR(LoadPretrained(*model, pretrained, c.pretrain.checkpoint));
    }
    std::vector<std::string> layers = c.demo.layers;
    summary.total_params = 0;
    for (const LayerGroup& g : model->groups()) {
      summary.total_params += g.num_params;
      if (g.common && std::find(layers.begin(), layers.end(), g.name) ==
                          layers.end()) {
        layers.push_back(g.name);
      }
    }
    const char* start = from_pretrained ? "pretrained" : "random-init";
    ASSIGN_OR_RETURN(EvalResult before, trainer.Evaluate(*model, test));
    out << absl::StrFormat(
        "finetune[%s]: client %d (%d examples), training {%s}; before: "
        "acc %.4f loss %.4f\n",
        start, c.demo.client, client.size(), absl::StrJoin(layers, ", "),
        before.accuracy, before.loss);
    EvalResult ev = before;
    for (int round = 0; round < c.demo.rounds; ++round) {
      const auto t0 = std::chrono::steady_clock::now();
      ASSIGN_OR_RETURN(TrainResult r,
                       trainer.Train(*model, train, layers, c.seed + round));
      ASSIGN_OR_RETURN(ev, trainer.Evaluate(*model, test));
      const double secs = std::chrono::duration<double>(
                              std::chrono::steady_clock::now() - t0)
                              .count();
      summary.trained_params = r.trained_params;
      out << absl::StrFormat(
          "finetune[%s]: round %d/%d  train-loss %.4f -> %.4f  test-acc %.4f  "
          "test-loss %.4f  %.1fs\n",
          start, round + 1, c.demo.rounds, r.first_loss, r.last_loss,
          ev.accuracy, ev.loss, secs);
    }
    (from_pretrained ? summary.pretrained_accuracy
                     : summary.random_init_accuracy) = ev.accuracy;
  }
  out << absl::StrFormat(
      "finetune: trained %d of %d parameters (%.1f%%); test accuracy from "
      "pretrained %.4f vs random init %.4f (%+.4f)\n",
      summary.trained_params, summary.total_params,
      100.0 * summary.trained_params / summary.total_params,
      summary.pretrained_accuracy, summary.random_init_accuracy,
      summary.pretrained_accuracy - summary.random_init_accuracy);
  return summary;
}

}  // namespace layerfl

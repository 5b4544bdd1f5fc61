#include "common/tokenizers/spm_shim.h"

#include <sentencepiece_processor.h>

#include <exception>
#include <string>
#include <string_view>
#include <vector>

namespace {

using sentencepiece::SentencePieceProcessor;

void Fail(LayerflSpmCharSink sink, void* context, const std::string& what) {
  sink(context, what.data(), what.size());
}

}  // namespace

extern "C" {

__attribute__((visibility("default"))) void* layerfl_spm_load(
    const char* path, LayerflSpmCharSink error, void* error_context) {
  try {
    auto* processor = new SentencePieceProcessor();
    const sentencepiece::util::Status status = processor->Load(path);
    if (!status.ok()) {
      Fail(error, error_context, status.ToString());
      delete processor;
      return nullptr;
    }
    return processor;
  } catch (const std::exception& e) {
    Fail(error, error_context, e.what());
  } catch (...) {
    Fail(error, error_context, "unknown exception");
  }
  return nullptr;
}

__attribute__((visibility("default"))) void layerfl_spm_free(void* model) {
  delete static_cast<SentencePieceProcessor*>(model);
}

__attribute__((visibility("default"))) int layerfl_spm_encode(
    const void* model, const char* text, size_t size, LayerflSpmIntSink ids,
    void* ids_context, LayerflSpmCharSink error, void* error_context) {
  try {
    std::vector<int> out;
    const sentencepiece::util::Status status =
        static_cast<const SentencePieceProcessor*>(model)->Encode(
            std::string_view(text, size), &out);
    if (!status.ok()) {
      Fail(error, error_context, status.ToString());
      return -1;
    }
    ids(ids_context, out.data(), out.size());
    return 0;
  } catch (const std::exception& e) {
    Fail(error, error_context, e.what());
  } catch (...) {
    Fail(error, error_context, "unknown exception");
  }
  return -1;
}

__attribute__((visibility("default"))) int layerfl_spm_size(const void* model) {
  return static_cast<const SentencePieceProcessor*>(model)->GetPieceSize();
}

__attribute__((visibility("default"))) void layerfl_spm_id_to_piece(
    const void* model, int id, LayerflSpmCharSink piece, void* context) {
  const auto* processor = static_cast<const SentencePieceProcessor*>(model);
  if (id < 0 || id >= processor->GetPieceSize()) {
    piece(context, "", 0);
    return;
  }
  const std::string& text = processor->IdToPiece(id);
  piece(context, text.data(), text.size());
}

}  // extern "C"

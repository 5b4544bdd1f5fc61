#ifndef LAYERFL_COMMON_TOKENIZERS_SPM_SHIM_H_
#define LAYERFL_COMMON_TOKENIZERS_SPM_SHIM_H_

#include <stddef.h>

// The C interface of liblayerfl_spm_shim.so, the one object that links
// Debian's libsentencepiece. That library carries its own copy of protobuf
// 3.14 with exported symbols, which clash with the system protobuf that gRPC
// binaries load (a version check aborts, or a crash). spm_model.cc therefore
// dlopen()s the shim with RTLD_LOCAL | RTLD_DEEPBIND: SentencePiece then binds
// to its own protobuf and nothing else sees it. Only C types cross this
// interface; no exception leaves it. Internal to common/tokenizers.
extern "C" {

// Receives a result: `size` items at `data`, valid only during the call.
typedef void (*LayerflSpmIntSink)(void* context, const int* data, size_t size);
typedef void (*LayerflSpmCharSink)(void* context, const char* data,
                                   size_t size);

// A loaded model, or NULL with the reason passed to `error`.
typedef void* (*LayerflSpmLoadFn)(const char* path, LayerflSpmCharSink error,
                                  void* error_context);
typedef void (*LayerflSpmFreeFn)(void* model);
// 0 with the ids passed to `ids`; -1 with the reason passed to `error`.
// Thread-safe.
typedef int (*LayerflSpmEncodeFn)(const void* model, const char* text,
                                  size_t size, LayerflSpmIntSink ids,
                                  void* ids_context, LayerflSpmCharSink error,
                                  void* error_context);
typedef int (*LayerflSpmSizeFn)(const void* model);
// Passes the piece of `id` (empty when out of range) to `piece`.
typedef void (*LayerflSpmIdToPieceFn)(const void* model, int id,
                                      LayerflSpmCharSink piece, void* context);

}  // extern "C"

#endif  // LAYERFL_COMMON_TOKENIZERS_SPM_SHIM_H_

#ifndef LAYERFL_COMMON_UTIL_STATUS_MACROS_H_
#define LAYERFL_COMMON_UTIL_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// RETURN_IF_ERROR(expr): evaluates an absl::Status expression and returns it
// from the enclosing function when it is not OK.
#define RETURN_IF_ERROR(expr)                          \
  do {                                                 \
    ::absl::Status layerfl_status_ = (expr);           \
    if (!layerfl_status_.ok()) return layerfl_status_; \
  } while (false)

#define LAYERFL_CONCAT_INNER_(a, b) a##b
#define LAYERFL_CONCAT_(a, b) LAYERFL_CONCAT_INNER_(a, b)

// ASSIGN_OR_RETURN(lhs, expr): evaluates an absl::StatusOr<T> expression; on
// error returns its status, otherwise moves the value into `lhs` (which may be a
// declaration such as `auto x`).
#define ASSIGN_OR_RETURN(lhs, expr) \
  LAYERFL_ASSIGN_OR_RETURN_IMPL_(LAYERFL_CONCAT_(layerfl_statusor_, __LINE__), lhs, expr)

#define LAYERFL_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                                   \
  if (!statusor.ok()) return statusor.status();             \
  lhs = std::move(statusor).value()

#endif  // LAYERFL_COMMON_UTIL_STATUS_MACROS_H_

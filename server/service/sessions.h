#ifndef LAYERFL_SERVER_SERVICE_SESSIONS_H_
#define LAYERFL_SERVER_SERVICE_SESSIONS_H_

// The coordinator's client sessions: one per joined client id, a random
// session id (libsodium, 128 bits) the client presents on every later call,
// compared in constant time; when it was last heard from; whether it was
// told the run is finished. Thread-safe, with its own lock, so that the
// heartbeats and polls of thousands of clients do not wait on the service's
// other state.

#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace layerfl {

class SessionTable {
 public:
  struct Entry {
    std::string id;
    double budget = 0;
    absl::Duration since_contact;
  };

  // A new session for `id` (replacing any earlier one) and its session id.
  std::string Open(const std::string& id, double budget, absl::Time now);
  // Whether `session` is `id`'s current session; then `id` was heard at now.
  bool Touch(const std::string& id, const std::string& session,
             absl::Time now);
  void Close(const std::string& id);
  // Closes and returns the sessions not heard from for longer than
  // `timeout` (id order).
  std::vector<std::string> Expire(absl::Time now, absl::Duration timeout);
  // Records that `id` was told the run is finished (no-op if it has no
  // session), and whether every open session was.
  void MarkToldFinished(const std::string& id);
  bool AllToldFinished() const;
  int size() const;
  std::vector<Entry> Entries(absl::Time now) const;

 private:
  struct Session {
    std::string session;
    absl::Time last_seen;
    bool told_finished = false;
    double budget = 0;
  };
  mutable absl::Mutex mu_;
  std::map<std::string, Session> sessions_ ABSL_GUARDED_BY(mu_);
};

}  // namespace layerfl

#endif  // LAYERFL_SERVER_SERVICE_SESSIONS_H_

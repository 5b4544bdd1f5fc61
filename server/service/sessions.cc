#include "server/service/sessions.h"

#include "common/util/secret.h"

namespace layerfl {

std::string SessionTable::Open(const std::string& id, double budget,
                               absl::Time now) {
  std::string session = RandomHexToken(16);
  absl::MutexLock lock(&mu_);
  sessions_[id] = Session{session, now, false, budget};
  return session;
}

bool SessionTable::Touch(const std::string& id, const std::string& session,
                         absl::Time now) {
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(id);
  if (it == sessions_.end() || !SecretsEqual(session, it->second.session)) {
    return false;
  }
  it->second.last_seen = now;
  return true;
}

void SessionTable::Close(const std::string& id) {
  absl::MutexLock lock(&mu_);
  sessions_.erase(id);
}

std::vector<std::string> SessionTable::Expire(absl::Time now,
                                              absl::Duration timeout) {
  std::vector<std::string> expired;
  absl::MutexLock lock(&mu_);
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    if (now - it->second.last_seen > timeout) {
      expired.push_back(it->first);
      it = sessions_.erase(it);
    } else {
      ++it;
    }
  }
  return expired;
}

void SessionTable::MarkToldFinished(const std::string& id) {
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(id);
  if (it != sessions_.end()) it->second.told_finished = true;
}

bool SessionTable::AllToldFinished() const {
  absl::MutexLock lock(&mu_);
  for (const auto& [id, s] : sessions_) {
    if (!s.told_finished) return false;
  }
  return true;
}

int SessionTable::size() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(sessions_.size());
}

std::vector<SessionTable::Entry> SessionTable::Entries(absl::Time now) const {
  std::vector<Entry> out;
  absl::MutexLock lock(&mu_);
  for (const auto& [id, s] : sessions_) {
    out.push_back({id, s.budget, now - s.last_seen});
  }
  return out;
}

}  // namespace layerfl

#include "daemon/server/peer_policy.h"

#include <gtest/gtest.h>

namespace sublease {
namespace {

TEST(PeerPolicyTest, AllowsRootSelfAndConfiguredGroupOnly) {
  constexpr uid_t kSelf = 998;
  struct Case {
    uid_t uid;
    gid_t gid;
    std::optional<gid_t> group;
    bool allowed;
  } cases[] = {
      {0, 0, std::nullopt, true},         // root
      {0, 1234, 77, true},                // root, whatever its group
      {kSelf, 5, std::nullopt, true},     // the daemon's own user
      {1000, 1000, std::nullopt, false},  // anyone else without a group
      {1000, 77, 77, true},               // primary gid is the socket's group
      {1000, 78, 77, false},              // another group
      {1000, 0, std::nullopt, false},     // gid 0 alone is not root
  };
  for (const Case& c : cases) {
    EXPECT_EQ(PeerAllowed(c.uid, c.gid, kSelf, c.group), c.allowed)
        << "uid " << c.uid << " gid " << c.gid;
  }
}

}  // namespace
}  // namespace sublease

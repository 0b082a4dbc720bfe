// Helpers shared by the allocator's tests (one definition, so the test executable can be
// a unity build: cmake/unity_tests.cmake).
#pragma once

#include "common/ip.h"

namespace sublease::test_util {

// REQUIRES: `text` is a valid address (test literals).
inline IpAddr Ip(const char* text) { return *IpAddr::Parse(text); }

}  // namespace sublease::test_util

// Subnet manifests: reads kubeovn.io/v1 Subnet objects from YAML (standalone mode).
//
// Accepts exactly what a user would `kubectl apply`: one or more YAML documents per
// file (also a `kind: List` with items), the seed's example verbatim. Documents of
// other kinds are skipped (a directory may hold NADs beside Subnets) and reported.
// A Subnet document with a missing or mistyped field is an error naming the file, the
// Subnet and the field. Pure parsing plus file reading; no side effects.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "daemon/allocator/subnet.h"

namespace sublease {

struct ManifestSet {
  std::vector<SubnetSpec> subnets;
  std::vector<std::string> skipped;  // "file: kind Foo/name" for documents not Subnets
};

// `source` names the text in messages (usually the file path).
Result<ManifestSet> ParseSubnetManifests(std::string_view yaml, const std::string& source);
// A file, or a directory whose *.yaml, *.yml and *.json files are read in name order.
Result<ManifestSet> LoadSubnetManifests(const std::string& path);

}  // namespace sublease

#include "cni/version.h"

#include <algorithm>

#include "common/json_writer.h"

namespace sublease::cni {
namespace {

// Versions are compared by their index in kSupportedVersions, which is ordered.
int VersionRank(std::string_view v) {
  auto it = std::find(kSupportedVersions.begin(), kSupportedVersions.end(), v);
  return it == kSupportedVersions.end() ? -1 : static_cast<int>(it - kSupportedVersions.begin());
}

}  // namespace

std::optional<Command> ParseCommand(std::string_view name) {
  for (Command c : {Command::kAdd, Command::kDel, Command::kCheck, Command::kVersion, Command::kGc,
                    Command::kStatus}) {
    if (CommandName(c) == name) return c;
  }
  return std::nullopt;
}

std::string_view CommandName(Command c) {
  switch (c) {
    case Command::kAdd: return "ADD";
    case Command::kDel: return "DEL";
    case Command::kCheck: return "CHECK";
    case Command::kVersion: return "VERSION";
    case Command::kGc: return "GC";
    case Command::kStatus: return "STATUS";
  }
  return "UNKNOWN";
}

bool IsSupportedVersion(std::string_view version) { return VersionRank(version) >= 0; }

bool ResultHasIpVersion(std::string_view version) {
  return VersionRank(version) >= 0 && VersionRank(version) < VersionRank("1.0.0");
}

CniResult<void> CheckCommandAllowed(Command c, std::string_view version) {
  std::string_view first;
  switch (c) {
    case Command::kCheck: first = "0.4.0"; break;
    case Command::kGc:
    case Command::kStatus: first = "1.1.0"; break;
    case Command::kAdd:
    case Command::kDel:
    case Command::kVersion: return {};
  }
  if (VersionRank(version) >= VersionRank(first)) return {};
  return FailCni(
      CniCode::kIncompatibleVersion,
      "config version " + std::string(version) + " does not allow " + std::string(CommandName(c)),
      "CNI " + std::string(CommandName(c)) + " exists from spec " + std::string(first) +
          " on; the network config says cniVersion " + std::string(version));
}

std::string FormatVersionInfo() {
  JsonWriter w;
  w.BeginObject().Field("cniVersion", kLatestVersion).Key("supportedVersions").BeginArray();
  for (auto v : kSupportedVersions) w.String(v);
  w.EndArray().EndObject();
  return w.Take();
}

}  // namespace sublease::cni

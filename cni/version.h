// CNI spec versions and commands: which versions the plugin speaks and which
// command exists in which version. Pure functions over strings; no I/O.
//
// Supported: 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0 (the results of 0.1/0.2 have a
// different shape and no runtime in use still asks for them).
#pragma once

#include <array>
#include <optional>
#include <string>
#include <string_view>

#include "cni/cni_error.h"

namespace sublease::cni {

inline constexpr std::string_view kLatestVersion = "1.1.0";
inline constexpr std::array<std::string_view, 5> kSupportedVersions = {"0.3.0", "0.3.1", "0.4.0",
                                                                       "1.0.0", "1.1.0"};

enum class Command { kAdd, kDel, kCheck, kVersion, kGc, kStatus };

// "ADD" → kAdd etc.; nullopt for anything else (the spec's names are upper case).
std::optional<Command> ParseCommand(std::string_view name);
std::string_view CommandName(Command c);

bool IsSupportedVersion(std::string_view version);
// True for 0.3.x and 0.4.0, whose results carry "version": "4"|"6" in each ip.
bool ResultHasIpVersion(std::string_view version);

// CNI spec: CHECK exists from 0.4.0, GC and STATUS from 1.1.0. Error 1 naming the
// command and version otherwise. REQUIRES: IsSupportedVersion(version).
CniResult<void> CheckCommandAllowed(Command c, std::string_view version);

// The VERSION answer: {"cniVersion":"1.1.0","supportedVersions":[...]}.
std::string FormatVersionInfo();

}  // namespace sublease::cni

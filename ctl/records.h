// Records: what subleasectl prints, as ordered fields, and the three ways to print them.
//
// A command builds a RecordList (a kind, column order, rows); Render writes it as a
// table for a person (upper-case headers, aligned columns), as JSON
// ({"kind": "...List", "items": [...]}, like kubectl) or as YAML with the same shape.
// Numbers stay numbers in JSON and YAML. Pure: no I/O.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "common/result.h"

namespace sublease::ctl {

enum class OutputFormat { kTable, kJson, kYaml };
// "table" (or ""), "json", "yaml"; kInvalidArgument naming the choices otherwise.
Result<OutputFormat> ParseOutputFormat(const std::string& text);

using Value = std::variant<std::string, int64_t, double, bool>;

struct Field {
  std::string key;    // JSON/YAML key, e.g. "address"
  Value value;
  bool in_table = true;  // false: JSON/YAML only (wide details)
};
using Record = std::vector<Field>;

struct RecordList {
  std::string kind;  // e.g. "Lease": JSON/YAML say "LeaseList"
  std::vector<Record> items;
};

// The table, JSON or YAML text, ending in a newline. An empty table prints
// `empty_message` instead (e.g. "no leases match").
std::string Render(const RecordList& list, OutputFormat format, const std::string& empty_message);

// A usage bar a person reads at a glance: "[######..............]" for `percent` of
// `width` cells; any use above zero shows at least one '#', and only 100% fills it.
std::string UsageBar(double percent, int width = 20);

}  // namespace sublease::ctl

#include "ctl/records.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>

#include "common/json_writer.h"

namespace sublease::ctl {
namespace {

std::string ValueText(const Value& v) {
  if (const auto* s = std::get_if<std::string>(&v)) return s->empty() ? "-" : *s;
  if (const auto* i = std::get_if<int64_t>(&v)) return std::to_string(*i);
  if (const auto* d = std::get_if<double>(&v)) {
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%.2f", *d);
    return buf;
  }
  return std::get<bool>(v) ? "yes" : "no";
}

std::string Header(const std::string& key) {
  std::string h;
  for (char c : key) {
    if (c == '_') h += ' ';
    else h += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  return h;
}

std::string RenderTable(const RecordList& list) {
  const Record& first = list.items.front();
  std::vector<size_t> columns;
  for (size_t i = 0; i < first.size(); ++i) {
    if (first[i].in_table) columns.push_back(i);
  }
  std::vector<std::vector<std::string>> cells;
  std::vector<std::string> header;
  for (size_t c : columns) header.push_back(Header(first[c].key));
  cells.push_back(header);
  for (const auto& r : list.items) {
    std::vector<std::string> row;
    for (size_t c : columns) row.push_back(c < r.size() ? ValueText(r[c].value) : "-");
    cells.push_back(std::move(row));
  }
  std::vector<size_t> width(columns.size(), 0);
  for (const auto& row : cells) {
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  std::string out;
  for (const auto& row : cells) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line.append(width[i] - row[i].size() + 3, ' ');
    }
    out += line + "\n";
  }
  return out;
}

void WriteJsonValue(JsonWriter& w, const Value& v) {
  if (const auto* s = std::get_if<std::string>(&v)) w.String(*s);
  else if (const auto* i = std::get_if<int64_t>(&v)) w.Int(*i);
  else if (const auto* d = std::get_if<double>(&v)) w.Double(*d);
  else w.Bool(std::get<bool>(v));
}

std::string RenderJson(const RecordList& list) {
  JsonWriter w;
  w.BeginObject().Field("kind", list.kind + "List").Key("items").BeginArray();
  for (const auto& r : list.items) {
    w.BeginObject();
    for (const auto& f : r) {
      w.Key(f.key);
      WriteJsonValue(w, f.value);
    }
    w.EndObject();
  }
  w.EndArray().EndObject();
  return w.Take() + "\n";
}

std::string RenderYaml(const RecordList& list) {
  YAML::Emitter out;
  out << YAML::BeginMap << YAML::Key << "kind" << YAML::Value << list.kind + "List";
  out << YAML::Key << "items" << YAML::Value << YAML::BeginSeq;
  for (const auto& r : list.items) {
    out << YAML::BeginMap;
    for (const auto& f : r) {
      out << YAML::Key << f.key << YAML::Value;
      // Strings are quoted so that "1.0" or "yes" stay strings for a YAML reader.
      if (const auto* s = std::get_if<std::string>(&f.value)) out << YAML::DoubleQuoted << *s;
      else if (const auto* i = std::get_if<int64_t>(&f.value)) out << *i;
      else if (const auto* d = std::get_if<double>(&f.value)) out << *d;
      else out << std::get<bool>(f.value);
    }
    out << YAML::EndMap;
  }
  out << YAML::EndSeq << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace

Result<OutputFormat> ParseOutputFormat(const std::string& text) {
  if (text.empty() || text == "table" || text == "wide") return OutputFormat::kTable;
  if (text == "json") return OutputFormat::kJson;
  if (text == "yaml") return OutputFormat::kYaml;
  return Fail(Error::InvalidArgument("-o " + text + ": use table, json or yaml"));
}

std::string Render(const RecordList& list, OutputFormat format, const std::string& empty_message) {
  switch (format) {
    case OutputFormat::kJson: return RenderJson(list);
    case OutputFormat::kYaml: return RenderYaml(list);
    case OutputFormat::kTable: break;
  }
  return list.items.empty() ? empty_message + "\n" : RenderTable(list);
}

std::string UsageBar(double percent, int width) {
  double p = std::clamp(percent, 0.0, 100.0);
  int filled = static_cast<int>(std::floor(p * width / 100.0));
  if (p > 0.0 && filled == 0) filled = 1;  // some use is never shown as none
  if (p < 100.0 && filled == width) filled = width - 1;  // only full is full
  return "[" + std::string(static_cast<size_t>(filled), '#') +
         std::string(static_cast<size_t>(width - filled), '.') + "]";
}

}  // namespace sublease::ctl

#include "daemon/service/subnet_manifest.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace sublease {
namespace {

constexpr std::string_view kBlockSizeAnnotation = "sublease.io/block-size";

Result<std::string> ScalarField(const YAML::Node& node, const char* key, const std::string& where,
                                bool required) {
  YAML::Node v = node[key];
  if (!v || v.IsNull()) {
    if (required) return Fail(Error::InvalidArgument(where + ": " + key + " is required"));
    return std::string();
  }
  if (!v.IsScalar()) return Fail(Error::InvalidArgument(where + ": " + key + " must be a string"));
  return v.as<std::string>();
}

Result<SubnetSpec> SubnetFromNode(const YAML::Node& doc, const std::string& source) {
  SubnetSpec spec;
  YAML::Node meta = doc["metadata"];
  if (!meta || !meta.IsMap()) return Fail(Error::InvalidArgument(source + ": Subnet without metadata"));
  auto name = ScalarField(meta, "name", source + ": Subnet", true);
  if (!name) return Fail(name.error());
  spec.name = *name;
  std::string where = source + ": Subnet " + spec.name + " spec";
  YAML::Node s = doc["spec"];
  if (!s || !s.IsMap()) return Fail(Error::InvalidArgument(source + ": Subnet " + spec.name + " has no spec"));
  auto cidr = ScalarField(s, "cidrBlock", where, true);
  if (!cidr) return Fail(cidr.error());
  spec.cidr_block = *cidr;
  auto provider = ScalarField(s, "provider", where, false);
  if (!provider) return Fail(provider.error());
  spec.provider = *provider;
  if (spec.provider.empty()) {
    return Fail(Error::InvalidArgument(where + ": provider is required for an attachment network "
                                       "(<nad name>.<nad namespace>, e.g. macvlan.default)"));
  }
  auto gateway = ScalarField(s, "gateway", where, false);
  if (!gateway) return Fail(gateway.error());
  spec.gateway = *gateway;
  auto protocol = ScalarField(s, "protocol", where, false);
  if (!protocol) return Fail(protocol.error());
  spec.protocol = *protocol;
  if (YAML::Node ex = s["excludeIps"]; ex && !ex.IsNull()) {
    if (!ex.IsSequence()) return Fail(Error::InvalidArgument(where + ": excludeIps must be a list"));
    for (const auto& item : ex) {
      if (!item.IsScalar()) return Fail(Error::InvalidArgument(where + ": excludeIps items must be strings"));
      spec.exclude_ips.push_back(item.as<std::string>());
    }
  }
  if (YAML::Node ann = meta["annotations"]; ann && ann.IsMap()) {
    if (YAML::Node bs = ann[std::string(kBlockSizeAnnotation)]; bs && bs.IsScalar()) {
      spec.block_size = bs.as<std::string>();
    }
  }
  return spec;
}

Result<void> AddDocument(const YAML::Node& doc, const std::string& source, ManifestSet* out) {
  if (!doc || doc.IsNull()) return Ok();  // empty document between '---'
  if (!doc.IsMap()) return Fail(Error::InvalidArgument(source + ": a document is not a YAML mapping"));
  std::string kind = doc["kind"] && doc["kind"].IsScalar() ? doc["kind"].as<std::string>() : "";
  std::string api = doc["apiVersion"] && doc["apiVersion"].IsScalar() ? doc["apiVersion"].as<std::string>() : "";
  if (kind == "List" && doc["items"] && doc["items"].IsSequence()) {
    for (const auto& item : doc["items"]) {
      if (auto r = AddDocument(item, source, out); !r) return r;
    }
    return Ok();
  }
  if (kind == "Subnet" && api == "kubeovn.io/v1") {
    auto spec = SubnetFromNode(doc, source);
    if (!spec) return Fail(spec.error());
    out->subnets.push_back(std::move(*spec));
    return Ok();
  }
  std::string name = doc["metadata"] && doc["metadata"]["name"] ? doc["metadata"]["name"].as<std::string>("") : "";
  if (kind == "Subnet") {
    return Fail(Error::InvalidArgument(source + ": Subnet " + name + " has apiVersion '" + api +
                                       "'; sublease reads kubeovn.io/v1 Subnets"));
  }
  out->skipped.push_back(source + ": " + (kind.empty() ? "(no kind)" : kind) + "/" + name);
  return Ok();
}

}  // namespace

Result<ManifestSet> ParseSubnetManifests(std::string_view yaml, const std::string& source) {
  ManifestSet out;
  try {
    for (const auto& doc : YAML::LoadAll(std::string(yaml))) {
      if (auto r = AddDocument(doc, source, &out); !r) return Fail(r.error());
    }
  } catch (const YAML::Exception& e) {
    return Fail(Error::InvalidArgument(source + ": not valid YAML: " + e.what()));
  }
  return out;
}

Result<ManifestSet> LoadSubnetManifests(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  std::vector<fs::path> files;
  if (fs::is_directory(path, ec)) {
    for (const auto& entry : fs::directory_iterator(path, ec)) {
      auto ext = entry.path().extension().string();
      if (entry.is_regular_file() && (ext == ".yaml" || ext == ".yml" || ext == ".json")) {
        files.push_back(entry.path());
      }
    }
    std::sort(files.begin(), files.end());
  } else if (fs::exists(path, ec)) {
    files.emplace_back(path);
  } else {
    return Fail(Error::InvalidArgument("--subnets " + path + ": no such file or directory"));
  }
  ManifestSet all;
  for (const auto& file : files) {
    std::ifstream in(file);
    if (!in) return Fail(Error::InvalidArgument("cannot read " + file.string()));
    std::stringstream text;
    text << in.rdbuf();
    auto set = ParseSubnetManifests(text.str(), file.string());
    if (!set) return Fail(set.error());
    for (auto& s : set->subnets) all.subnets.push_back(std::move(s));
    for (auto& s : set->skipped) all.skipped.push_back(std::move(s));
  }
  return all;
}

}  // namespace sublease

#include "sync/kube_object.h"

#include <simdjson.h>

namespace sublease {
namespace {

namespace od = simdjson::ondemand;

// One parser per thread: parsing reuses its buffers (the daemon has one thread).
od::parser& Parser() {
  thread_local od::parser parser;
  return parser;
}

std::string String(od::value v) {
  if (v.is_null()) return "";
  return std::string(std::string_view(v.get_string()));
}

void ReadMetadata(od::object meta, KubeObject* out) {
  for (od::field field : meta) {
    std::string_view key = field.unescaped_key();
    od::value v = field.value();
    if (key == "name") {
      out->name = String(v);
    } else if (key == "namespace") {
      out->namespace_name = String(v);
    } else if (key == "uid") {
      out->uid = String(v);
    } else if (key == "resourceVersion") {
      out->resource_version = String(v);
    } else if (key == "deletionTimestamp") {
      out->deleting = !v.is_null();
    } else if (key == "labels") {
      if (v.is_null()) continue;
      for (od::field label : v.get_object()) {
        std::string k(std::string_view(label.unescaped_key()));
        out->labels[std::move(k)] = String(label.value());
      }
    }
  }
}

// Parses `json` as an object and fills metadata; `require_name` off for bookmarks.
Result<KubeObject> ParseObject(std::string_view json, bool require_name) {
  KubeObject obj;
  try {
    simdjson::padded_string padded(json);
    od::document doc = Parser().iterate(padded);
    od::object root = doc.get_object();
    for (od::field field : root) {
      if (std::string_view(field.unescaped_key()) == "metadata") {
        ReadMetadata(field.value().get_object(), &obj);
      }
    }
  } catch (const simdjson::simdjson_error& e) {
    return Fail(Error::InvalidArgument(std::string("malformed object JSON: ") + e.what()));
  }
  if (require_name && obj.name.empty()) {
    return Fail(Error::InvalidArgument("object has no metadata.name"));
  }
  obj.raw = std::string(json);
  return obj;
}

}  // namespace

Result<KubeObject> ParseKubeObject(std::string_view json) { return ParseObject(json, true); }

Result<KubeStatus> ParseStatus(std::string_view json) {
  KubeStatus status;
  bool is_status = false;
  try {
    simdjson::padded_string padded(json);
    od::document doc = Parser().iterate(padded);
    for (od::field field : doc.get_object()) {
      std::string_view key = field.unescaped_key();
      od::value v = field.value();
      if (key == "kind") {
        is_status = String(v) == "Status";
      } else if (key == "reason") {
        status.reason = String(v);
      } else if (key == "message") {
        status.message = String(v);
      } else if (key == "code") {
        status.code = static_cast<int>(int64_t(v.get_int64()));
      }
    }
  } catch (const simdjson::simdjson_error& e) {
    return Fail(Error::InvalidArgument(std::string("malformed Status JSON: ") + e.what()));
  }
  if (!is_status) return Fail(Error::InvalidArgument("not a Status object"));
  return status;
}

std::string_view WatchEventTypeName(WatchEventType type) {
  switch (type) {
    case WatchEventType::kAdded:
      return "ADDED";
    case WatchEventType::kModified:
      return "MODIFIED";
    case WatchEventType::kDeleted:
      return "DELETED";
    case WatchEventType::kBookmark:
      return "BOOKMARK";
    case WatchEventType::kError:
      return "ERROR";
  }
  return "?";
}

Result<WatchEvent> ParseWatchEvent(std::string_view line) {
  WatchEvent event;
  std::string type;
  std::string object_json;
  try {
    simdjson::padded_string padded(line);
    od::document doc = Parser().iterate(padded);
    for (od::field field : doc.get_object()) {
      std::string_view key = field.unescaped_key();
      if (key == "type") {
        type = String(field.value());
      } else if (key == "object") {
        od::object object = field.value().get_object();
        object_json = std::string(std::string_view(object.raw_json()));
      }
    }
  } catch (const simdjson::simdjson_error& e) {
    return Fail(Error::InvalidArgument(std::string("malformed watch event: ") + e.what()));
  }
  if (object_json.empty()) return Fail(Error::InvalidArgument("watch event has no object"));
  if (type == "ERROR") {
    event.type = WatchEventType::kError;
    auto status = ParseStatus(object_json);
    if (!status) return Fail(status.error().Wrap("watch ERROR event"));
    event.status = std::move(*status);
    return event;
  }
  if (type == "ADDED") {
    event.type = WatchEventType::kAdded;
  } else if (type == "MODIFIED") {
    event.type = WatchEventType::kModified;
  } else if (type == "DELETED") {
    event.type = WatchEventType::kDeleted;
  } else if (type == "BOOKMARK") {
    event.type = WatchEventType::kBookmark;
  } else {
    return Fail(Error::InvalidArgument("watch event has unknown type \"" + type + "\""));
  }
  auto object = ParseObject(object_json, event.type != WatchEventType::kBookmark);
  if (!object)
    return Fail(object.error().Wrap(std::string(WatchEventTypeName(event.type)) + " event"));
  if (object->resource_version.empty()) {
    return Fail(Error::InvalidArgument("watch event object has no metadata.resourceVersion"));
  }
  event.object = std::move(*object);
  return event;
}

Result<ListPage> ParseListPage(std::string_view json) {
  ListPage page;
  std::vector<std::string> raw_items;
  try {
    simdjson::padded_string padded(json);
    od::document doc = Parser().iterate(padded);
    for (od::field field : doc.get_object()) {
      std::string_view key = field.unescaped_key();
      od::value v = field.value();
      if (key == "metadata") {
        for (od::field m : v.get_object()) {
          std::string_view mkey = m.unescaped_key();
          if (mkey == "resourceVersion") page.resource_version = String(m.value());
          if (mkey == "continue") page.continue_token = String(m.value());
        }
      } else if (key == "items") {
        if (v.is_null()) continue;
        for (od::value item : v.get_array()) {
          od::object object = item.get_object();
          raw_items.emplace_back(std::string_view(object.raw_json()));
        }
      }
    }
  } catch (const simdjson::simdjson_error& e) {
    return Fail(Error::InvalidArgument(std::string("malformed list JSON: ") + e.what()));
  }
  page.items.reserve(raw_items.size());
  for (size_t i = 0; i < raw_items.size(); ++i) {
    auto obj = ParseKubeObject(raw_items[i]);
    if (!obj) return Fail(obj.error().Wrap("list item " + std::to_string(i)));
    page.items.push_back(std::move(*obj));
  }
  return page;
}

}  // namespace sublease

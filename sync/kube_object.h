// The shapes the Kubernetes API answers with, parsed: objects, lists, watch events and
// Status. The raw JSON of each object is kept byte for byte; only metadata is parsed
// (the layers above read their own fields). Pure functions over strings; any thread.
//
// Kubernetes API facts relied on here:
// - Every object has metadata.name, .uid, .resourceVersion; namespaced ones a
//   .namespace. resourceVersion is opaque: compare for equality only.
// - A list is {"metadata":{"resourceVersion","continue"},"items":[...]}.
// - A watch line is {"type":"ADDED|MODIFIED|DELETED|BOOKMARK|ERROR","object":{...}};
//   a BOOKMARK object carries only metadata.resourceVersion; an ERROR object is a
//   Status (code 410 reason Expired: the resourceVersion left the server's window).
// - Failures are Status objects {"kind":"Status","reason","message","code"}.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace sublease {

struct KubeObject {
  std::string raw;  // the object's JSON exactly as the server sent it
  std::string name;
  std::string namespace_name;  // "" for cluster-scoped objects
  std::string uid;
  std::string resource_version;
  std::map<std::string, std::string> labels;
  bool deleting = false;  // metadata.deletionTimestamp is set (graceful delete began)

  // "namespace/name", or "name" when cluster-scoped: the cache key.
  std::string Key() const { return namespace_name.empty() ? name : namespace_name + "/" + name; }
};

// Parses one object's metadata. kInvalidArgument when it is not an object or lacks
// metadata.name (bookmarks are parsed by ParseWatchEvent, not here).
Result<KubeObject> ParseKubeObject(std::string_view json);

// A metav1.Status (the body of a non-2xx answer or a watch ERROR event).
struct KubeStatus {
  int code = 0;        // HTTP code it stands for (410, 409, ...); 0 when absent
  std::string reason;  // "AlreadyExists", "Conflict", "Expired", "NotFound", ...
  std::string message;
};
// kInvalidArgument when `json` is not a Status object.
Result<KubeStatus> ParseStatus(std::string_view json);

enum class WatchEventType { kAdded, kModified, kDeleted, kBookmark, kError };
std::string_view WatchEventTypeName(WatchEventType type);

struct WatchEvent {
  WatchEventType type = WatchEventType::kAdded;
  KubeObject object;  // kAdded/kModified/kDeleted; for kBookmark only resource_version
  KubeStatus status;  // kError
};
// Parses one watch line. kInvalidArgument for malformed JSON or an unknown type.
Result<WatchEvent> ParseWatchEvent(std::string_view line);

struct ListPage {
  std::string resource_version;  // the list's (snapshot) resourceVersion
  std::string continue_token;    // "" on the last page
  std::vector<KubeObject> items;
};
// Parses a list answer. kInvalidArgument for malformed JSON or a bad item.
Result<ListPage> ParseListPage(std::string_view json);

}  // namespace sublease

#!/usr/bin/env python3
"""A fake Kubernetes API server for sublease's integration, fault and benchmark tests.

Python 3 standard library only (plus the `openssl` CLI to make certificates).
It answers the requests sublease makes the way a kube-apiserver v1.26 does: the shapes are
taken from the recordings in shared/k8s-reference (see docs/fake-apiserver.md for which
recording backs which behaviour).  Run `fake_apiserver.py --help` for the options.

Only loopback addresses are ever bound.
"""

import argparse
import base64
import bisect
import collections
import copy
import marshal
import datetime
import heapq
import http.server
import json
import os
import random
import re
import signal
import socket
import socketserver
import ssl
import string
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import openapi_v2  # noqa: E402  (beside this file)

SERVER_VERSION = {
    "major": "1", "minor": "26", "gitVersion": "v1.26.5-fake",
    "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
    "buildDate": "2023-05-17T00:00:00Z", "goVersion": "go1.19.9", "compiler": "gc",
    "platform": "linux/amd64",
}

# ----------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------


def now_ts():
    return time.time()


def rfc3339(ts):
    return datetime.datetime.fromtimestamp(int(ts), datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(s):
    try:
        return datetime.datetime.strptime(s[:19], "%Y-%m-%dT%H:%M:%S").replace(
            tzinfo=datetime.timezone.utc).timestamp()
    except (TypeError, ValueError):
        return None


def human_duration(seconds):
    """Like k8s.io/apimachinery/pkg/util/duration.HumanDuration (what kubectl's AGE shows)."""
    s = int(max(seconds, 0))
    if s < 120:
        return "%ds" % s
    m = s // 60
    if m < 10:
        return "%dm%ds" % (m, s % 60) if s % 60 else "%dm" % m
    if m < 180:
        return "%dm" % m
    h = s // 3600
    if h < 8:
        return "%dh%dm" % (h, m % 60) if m % 60 else "%dh" % h
    if h < 48:
        return "%dh" % h
    d = h // 24
    if h < 192:
        return "%dd%dh" % (d, h % 24) if h % 24 else "%dd" % d
    if d < 730:
        return "%dd" % d
    return "%dy%dd" % (d // 365, d % 365) if d < 3000 else "%dy" % (d // 365)


def dumps(obj, pretty=False):
    if pretty:
        return json.dumps(obj, indent=2, ensure_ascii=False).encode()
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _sort_deep_py(v):
    if isinstance(v, dict):
        return {k: _sort_deep_py(v[k]) for k in sorted(v)}
    if isinstance(v, list):
        return [_sort_deep_py(x) for x in v]
    return v


def sort_deep(v):
    """Unstructured objects (custom resources) come back with sorted keys, like Go maps.
    (A JSON round trip does it in C, several times faster than walking the tree here.)"""
    try:
        return json.loads(json.dumps(v, sort_keys=True, ensure_ascii=False))
    except (TypeError, ValueError):
        return _sort_deep_py(v)


def jcopy(v):
    """A deep copy of a JSON value (dicts, lists, strings, numbers, booleans, None), in C
    (marshal): copy.deepcopy's pure-Python walk was the fake's largest CPU cost."""
    try:
        return marshal.loads(marshal.dumps(v))
    except ValueError:
        return copy.deepcopy(v)


def order_keys(d, order):
    out = {}
    for k in order:
        if k in d:
            out[k] = d[k]
    for k in d:
        if k not in out:
            out[k] = d[k]
    return out


META_ORDER = ["name", "generateName", "namespace", "selfLink", "uid", "resourceVersion",
              "generation", "creationTimestamp", "deletionTimestamp",
              "deletionGracePeriodSeconds", "labels", "annotations", "ownerReferences",
              "finalizers", "managedFields"]
MF_ORDER = ["manager", "operation", "apiVersion", "time", "fieldsType", "fieldsV1",
            "subresource"]
POD_SPEC_ORDER = ["volumes", "initContainers", "containers", "ephemeralContainers",
                  "restartPolicy", "terminationGracePeriodSeconds", "activeDeadlineSeconds",
                  "dnsPolicy", "nodeSelector", "serviceAccountName", "serviceAccount",
                  "automountServiceAccountToken", "nodeName", "hostNetwork", "hostPID",
                  "hostIPC", "shareProcessNamespace", "securityContext", "imagePullSecrets",
                  "hostname", "subdomain", "affinity", "schedulerName", "tolerations",
                  "hostAliases", "priorityClassName", "priority", "dnsConfig",
                  "readinessGates", "runtimeClassName", "enableServiceLinks",
                  "preemptionPolicy", "overhead", "topologySpreadConstraints",
                  "setHostnameAsFQDN", "os", "hostUsers", "schedulingGates",
                  "resourceClaims"]
CONTAINER_ORDER = ["name", "image", "command", "args", "workingDir", "ports", "envFrom", "env",
                   "resources", "volumeMounts", "volumeDevices", "livenessProbe",
                   "readinessProbe", "startupProbe", "lifecycle", "terminationMessagePath",
                   "terminationMessagePolicy", "imagePullPolicy", "securityContext", "stdin",
                   "stdinOnce", "tty"]
POD_STATUS_ORDER = ["phase", "conditions", "message", "reason", "nominatedNodeName", "hostIP",
                    "podIP", "podIPs", "startTime", "initContainerStatuses",
                    "containerStatuses", "qosClass", "ephemeralContainerStatuses"]
COND_ORDER = ["type", "status", "lastProbeTime", "lastHeartbeatTime", "lastTransitionTime",
              "reason", "message"]


def order_builtin(rt, obj):
    """Typed (built-in) objects are serialised in Go struct field order."""
    o = order_keys(obj, ["kind", "apiVersion", "metadata", "spec", "status"])
    md = o.get("metadata")
    if isinstance(md, dict):
        md = order_keys(md, META_ORDER)
        for m in ("labels", "annotations"):       # Go maps marshal with sorted keys
            if isinstance(md.get(m), dict):
                md[m] = {k: md[m][k] for k in sorted(md[m])}
        if isinstance(md.get("managedFields"), list):
            md["managedFields"] = [order_keys(m, MF_ORDER) if isinstance(m, dict) else m
                                   for m in md["managedFields"]]
        o["metadata"] = md
    if rt.kind == "Pod":
        spec = o.get("spec")
        if isinstance(spec, dict):
            spec = order_keys(spec, POD_SPEC_ORDER)
            for f in ("containers", "initContainers"):
                if isinstance(spec.get(f), list):
                    spec[f] = [order_keys(c, CONTAINER_ORDER) if isinstance(c, dict) else c
                               for c in spec[f]]
            o["spec"] = spec
        st = o.get("status")
        if isinstance(st, dict):
            st = order_keys(st, POD_STATUS_ORDER)
            if isinstance(st.get("conditions"), list):
                st["conditions"] = [order_keys(c, COND_ORDER) if isinstance(c, dict) else c
                                    for c in st["conditions"]]
            o["status"] = st
    return o


# ----------------------------------------------------------------------------------------
# Errors as Kubernetes Status objects
# ----------------------------------------------------------------------------------------


def status_body(code, reason, message, details=None, success=False):
    st = {"kind": "Status", "apiVersion": "v1", "metadata": {},
          "status": "Success" if success else "Failure"}
    if message:
        st["message"] = message
    if reason:
        st["reason"] = reason
    if details is not None:
        st["details"] = details
    st["code"] = code
    return st


class ApiError(Exception):
    def __init__(self, code, reason, message, details=None, headers=None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.headers = headers or {}

    def body(self):
        return status_body(self.code, self.reason, self.message, self.details)


def _details(rt, name, kind=None):
    d = {}
    if name:
        d["name"] = name
    if rt.group:
        d["group"] = rt.group
    d["kind"] = kind or rt.plural
    return d


def err_not_found(rt, name):
    return ApiError(404, "NotFound", '%s "%s" not found' % (rt.qualified, name),
                    _details(rt, name))


def err_already_exists(rt, name):
    return ApiError(409, "AlreadyExists", '%s "%s" already exists' % (rt.qualified, name),
                    _details(rt, name))


OPTIMISTIC_LOCK_MSG = ("the object has been modified; please apply your changes to the "
                       "latest version and try again")


def err_conflict(rt, name, msg=OPTIMISTIC_LOCK_MSG, by_kind=False):
    q = rt.qualified_kind if by_kind else rt.qualified
    return ApiError(409, "Conflict", 'Operation cannot be fulfilled on %s "%s": %s' % (q, name, msg),
                    _details(rt, name, rt.kind if by_kind else None))


def err_bad_request(msg):
    return ApiError(400, "BadRequest", msg)


def err_invalid(rt, name, causes, by_resource=False):
    """causes: list of (reason, field, message)."""
    q = rt.qualified if by_resource else rt.qualified_kind
    parts = ["%s: %s" % (f, m) if f else m for (_, f, m) in causes]
    joined = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    det = _details(rt, name, rt.plural if by_resource else rt.kind)
    det["causes"] = [dict([("reason", r), ("message", m)] + ([("field", f)] if f else []))
                     for (r, f, m) in causes]
    return ApiError(422, "Invalid", '%s "%s" is invalid: %s' % (q, name, joined), det)


def err_method_not_allowed():
    return ApiError(405, "MethodNotAllowed",
                    "the server does not allow this method on the requested resource", {})


def err_path_not_found():
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


def err_expired(msg):
    return ApiError(410, "Expired", msg)


def err_too_large_rv(rv, current):
    return ApiError(504, "Timeout", "Timeout: Too large resource version: %s, current: %s" % (rv, current),
                    {"causes": [{"reason": "ResourceVersionTooLarge",
                                 "message": "Too large resource version"}],
                     "retryAfterSeconds": 1})


# ----------------------------------------------------------------------------------------
# Names, labels and selectors
# ----------------------------------------------------------------------------------------

DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                 "characters, '-' or '.', and must start and end with an alphanumeric character "
                 "(e.g. 'example.com', regex used for validation is "
                 "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or "
             "'-', and must start and end with an alphanumeric character (e.g. 'my-name',  or "
             "'123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")


def qualified_name_errors(key):
    """Validation of a label/annotation key; returns a list of messages."""
    errs = []
    if "/" in key:
        prefix, name = key.split("/", 1)
        if not prefix or len(prefix) > 253 or not DNS1123_SUBDOMAIN.match(prefix):
            errs.append("prefix part " + SUBDOMAIN_MSG)
    else:
        name = key
    if not name:
        errs.append("name part must be non-empty")
    elif len(name) > 63:
        errs.append("name part must be no more than 63 characters")
    elif not LABEL_NAME.match(name):
        errs.append("name part must consist of alphanumeric characters, '-', '_' or '.', and "
                    "must start and end with an alphanumeric character (e.g. 'MyName',  or "
                    "'my.name',  or '123-abc', regex used for validation is "
                    "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")
    return errs


def label_value_errors(v):
    if not isinstance(v, str):
        return ["must be a string"]
    if len(v) > 63:
        return ["must be no more than 63 characters"]
    if not LABEL_VALUE.match(v):
        return ["a valid label must be an empty string or consist of alphanumeric characters, "
                "'-', '_' or '.', and must start and end with an alphanumeric character (e.g. "
                "'MyValue',  or 'my_value',  or '12345', regex used for validation is "
                "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"]
    return []


def _split_top_level(s):
    parts, depth, cur = [], 0, []
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


class LabelSelector:
    """labelSelector grammar: k=v, k==v, k!=v, k in (a,b), k notin (a,b), k, !k, k>n, k<n."""

    def __init__(self, text):
        self.reqs = []
        text = (text or "").strip()
        if not text:
            return
        for raw in _split_top_level(text):
            p = raw.strip()
            if not p:
                raise err_bad_request("unable to parse requirement: found '', expected: identifier")
            m = re.fullmatch(r"(\S+)\s+(in|notin)\s*\((.*)\)", p)
            if m:
                key, op = m.group(1), m.group(2)
                vals = [v.strip() for v in m.group(3).split(",")]
                vals = [v for v in vals if v != ""] if len(vals) > 1 else vals
                self._check(key, vals)
                self.reqs.append((key, op, set(vals)))
                continue
            m = re.fullmatch(r"!\s*(\S+)", p)
            if m:
                self._check(m.group(1), [])
                self.reqs.append((m.group(1), "!", None))
                continue
            m = re.fullmatch(r"([^=!<>\s]+)\s*(==|!=|=|>|<)\s*(\S*)", p)
            if m:
                key, op, val = m.group(1), m.group(2), m.group(3)
                if op in (">", "<"):
                    try:
                        val = int(val)
                    except ValueError:
                        raise err_bad_request("unable to parse requirement: for 'Gt', 'Lt' "
                                              "operators, the value must be an integer")
                else:
                    self._check(key, [val])
                self.reqs.append((key, "=" if op == "==" else op, val))
                continue
            if re.fullmatch(r"\S+", p):
                self._check(p, [])
                self.reqs.append((p, "exists", None))
                continue
            raise err_bad_request("unable to parse requirement: found '%s', expected: "
                                  "in, notin, =, ==, !=, gt, lt" % p)

    @staticmethod
    def _check(key, vals):
        errs = qualified_name_errors(key)
        if errs:
            raise err_bad_request('unable to parse requirement: values[0][%s]: Invalid value: '
                                  '"%s": %s' % (key, key, errs[0]))
        for v in vals:
            ve = label_value_errors(v)
            if ve:
                raise err_bad_request('unable to parse requirement: values[0][%s]: Invalid '
                                      'value: "%s": %s' % (key, v, ve[0]))

    def empty(self):
        return not self.reqs

    def matches(self, labels):
        labels = labels or {}
        for key, op, val in self.reqs:
            has = key in labels
            cur = labels.get(key)
            if op == "=" and not (has and cur == val):
                return False
            if op == "!=" and has and cur == val:
                return False
            if op == "in" and not (has and cur in val):
                return False
            if op == "notin" and has and cur in val:
                return False
            if op == "exists" and not has:
                return False
            if op == "!" and has:
                return False
            if op in (">", "<"):
                try:
                    n = int(cur)
                except (TypeError, ValueError):
                    return False
                if (op == ">" and not n > val) or (op == "<" and not n < val):
                    return False
        return True


class FieldSelector:
    def __init__(self, text, rt):
        self.reqs = []
        text = (text or "").strip()
        if not text:
            return
        for raw in text.split(","):
            p = raw.strip()
            if not p:
                continue
            m = re.fullmatch(r"([^=!]+?)\s*(==|!=|=)\s*(.*)", p)
            if not m:
                raise err_bad_request("invalid selector: '%s'; can't understand '%s'" % (text, p))
            key, op, val = m.group(1).strip(), m.group(2), m.group(3).strip()
            if key not in rt.field_labels():
                raise err_bad_request("field label not supported: %s" % key)
            self.reqs.append((key, "!=" if op == "!=" else "=", val))

    def empty(self):
        return not self.reqs

    def matches(self, fields):
        for key, op, val in self.reqs:
            cur = fields.get(key, "")
            if (op == "=") != (cur == val):
                return False
        return True


def get_path(obj, dotted):
    cur = obj
    for part in dotted.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def field_str(v):
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


# ----------------------------------------------------------------------------------------
# A small structural-schema validator for custom resources (openAPIV3Schema subset)
# ----------------------------------------------------------------------------------------

JSON_TYPE = {str: "string", bool: "boolean", int: "integer", float: "number",
             list: "array", dict: "object", type(None): "null"}


def _jtype(v):
    return JSON_TYPE.get(type(v), "object")


def _fmt_val(v):
    if isinstance(v, str):
        return '"%s"' % v
    return json.dumps(v)


def schema_validate(schema, value, path, causes):
    """Validates `value` against `schema`, appends (reason, field, message) to causes."""
    if not isinstance(schema, dict):
        return
    if value is None:
        if schema.get("nullable"):
            return
        if schema.get("type"):
            causes.append(("FieldValueTypeInvalid", path,
                           'Invalid value: "null": %s in body must be of type %s: "null"'
                           % (path, schema["type"])))
        return
    if schema.get("x-kubernetes-int-or-string"):
        if not isinstance(value, (int, str)) or isinstance(value, bool):
            causes.append(("FieldValueTypeInvalid", path,
                           'Invalid value: "%s": %s in body must be of type int-or-string: "%s"'
                           % (_jtype(value), path, _jtype(value))))
        return
    t = schema.get("type")
    vt = _jtype(value)
    if t:
        ok = vt == t or (t == "number" and vt == "integer")
        if t == "integer" and isinstance(value, float) and value.is_integer():
            ok = True
        if not ok:
            causes.append(("FieldValueTypeInvalid", path,
                           'Invalid value: "%s": %s in body must be of type %s: "%s"'
                           % (vt, path, t, vt)))
            return
    if "enum" in schema and value not in schema["enum"]:
        causes.append(("FieldValueNotSupported", path,
                       "Unsupported value: %s: supported values: %s"
                       % (_fmt_val(value), ", ".join(_fmt_val(e) for e in schema["enum"]))))
    if isinstance(value, str):
        if "pattern" in schema:
            try:
                if not re.search(schema["pattern"], value):
                    causes.append(("FieldValueInvalid", path,
                                   'Invalid value: "%s": %s in body should match \'%s\''
                                   % (value, path, schema["pattern"])))
            except re.error:
                pass
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            causes.append(("FieldValueTooLong", path,
                           "Too long: may not be longer than %d" % schema["maxLength"]))
        if "minLength" in schema and len(value) < schema["minLength"]:
            causes.append(("FieldValueInvalid", path,
                           'Invalid value: "%s": %s in body should be at least %d chars long'
                           % (value, path, schema["minLength"])))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            causes.append(("FieldValueInvalid", path,
                           "Invalid value: %s: %s in body should be greater than or equal to %s"
                           % (json.dumps(value), path, schema["minimum"])))
        if "maximum" in schema and value > schema["maximum"]:
            causes.append(("FieldValueInvalid", path,
                           "Invalid value: %s: %s in body should be less than or equal to %s"
                           % (json.dumps(value), path, schema["maximum"])))
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for req in schema.get("required") or []:
            if req not in value:
                causes.append(("FieldValueRequired", (path + "." if path else "") + req,
                               "Required value"))
        for k, sub in props.items():
            if k in value:
                schema_validate(sub, value[k], (path + "." if path else "") + k, causes)
        ap = schema.get("additionalProperties")
        if isinstance(ap, dict):
            for k, v in value.items():
                if k not in props:
                    schema_validate(ap, v, (path + "." if path else "") + k, causes)
    if isinstance(value, list):
        items = schema.get("items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            causes.append(("FieldValueTooMany", path,
                           "Too many: %d: must have at most %d items" % (len(value), schema["maxItems"])))
        if isinstance(items, dict):
            for i, v in enumerate(value):
                schema_validate(items, v, "%s[%d]" % (path, i), causes)


def schema_prune(schema, value):
    """Drops fields the structural schema does not know (as the API server does)."""
    if not isinstance(schema, dict) or schema.get("x-kubernetes-preserve-unknown-fields"):
        return value
    if isinstance(value, dict):
        props = schema.get("properties")
        ap = schema.get("additionalProperties")
        if props is None and ap is None:
            return value if schema.get("type") != "object" else {}
        out = {}
        for k, v in value.items():
            if props and k in props:
                out[k] = schema_prune(props[k], v)
            elif isinstance(ap, dict):
                out[k] = schema_prune(ap, v)
            elif ap is True:
                out[k] = v
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [schema_prune(schema["items"], v) for v in value]
    return value


def schema_unknown_fields(schema, value, path, out):
    if not isinstance(schema, dict) or schema.get("x-kubernetes-preserve-unknown-fields"):
        return
    if isinstance(value, dict):
        props = schema.get("properties")
        ap = schema.get("additionalProperties")
        if props is None and ap is None:
            return
        for k, v in value.items():
            p = (path + "." if path else "") + k
            if props and k in props:
                schema_unknown_fields(props[k], v, p, out)
            elif isinstance(ap, dict):
                schema_unknown_fields(ap, v, p, out)
            elif ap is not True:
                out.append(p)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, v in enumerate(value):
            schema_unknown_fields(schema["items"], v, "%s[%d]" % (path, i), out)


# ----------------------------------------------------------------------------------------
# Patches
# ----------------------------------------------------------------------------------------


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch: objects merge recursively, null deletes, the rest replaces."""
    if not isinstance(patch, dict):
        return jcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict):
            out[k] = merge_patch(out.get(k), v)
        else:
            out[k] = jcopy(v)
    return out


def strategic_merge_patch(target, patch):
    """An approximation of strategic merge patch: merge patch, but lists of objects that all
    carry a "name" are merged by name (the merge key of containers, env, ports, volumes...),
    and $patch/$setElementOrder/$retainKeys/$deleteFromPrimitiveList directives are honoured
    in their simple forms."""
    if not isinstance(patch, dict):
        return jcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: jcopy(v) for k, v in patch.items() if not k.startswith("$")}
    if patch.get("$patch") == "delete":
        return None
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if k.startswith("$setElementOrder/") or k.startswith("$retainKeys") or k == "$patch":
            continue
        if k.startswith("$deleteFromPrimitiveList/"):
            fk = k.split("/", 1)[1]
            if isinstance(out.get(fk), list) and isinstance(v, list):
                out[fk] = [x for x in out[fk] if x not in v]
            continue
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict):
            r = strategic_merge_patch(out.get(k), v)
            if r is None:
                out.pop(k, None)
            else:
                out[k] = r
        elif (isinstance(v, list) and v and all(isinstance(x, dict) and "name" in x for x in v)
              and isinstance(out.get(k), list)
              and all(isinstance(x, dict) and "name" in x for x in out[k])):
            cur = [dict(x) for x in out[k]]
            idx = {x["name"]: i for i, x in enumerate(cur)}
            for item in v:
                if item.get("$patch") == "delete":
                    if item["name"] in idx:
                        cur[idx[item["name"]]] = None
                    continue
                if item["name"] in idx:
                    cur[idx[item["name"]]] = strategic_merge_patch(cur[idx[item["name"]]], item)
                else:
                    idx[item["name"]] = len(cur)
                    cur.append(strategic_merge_patch({}, item))
            out[k] = [x for x in cur if x is not None]
        else:
            out[k] = jcopy(v)
    return out


def _ptr_tokens(path):
    if path == "":
        return []
    if not path.startswith("/"):
        raise ValueError("invalid JSON pointer %r" % path)
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]


def json_patch(doc, ops):
    """RFC 6902 JSON patch."""
    doc = jcopy(doc)
    if not isinstance(ops, list):
        raise ValueError("a JSON patch must be a list of operations")

    def parent(tokens):
        cur = doc
        for t in tokens[:-1]:
            if isinstance(cur, list):
                cur = cur[int(t)]
            elif isinstance(cur, dict):
                if t not in cur:
                    raise ValueError("doc is missing path: %s" % "/".join(tokens))
                cur = cur[t]
            else:
                raise ValueError("doc is missing path")
        return cur

    def get(tokens):
        if not tokens:
            return doc
        p = parent(tokens)
        last = tokens[-1]
        if isinstance(p, list):
            return p[int(last)]
        if last not in p:
            raise ValueError("doc is missing key: %s" % last)
        return p[last]

    def remove(tokens):
        p = parent(tokens)
        last = tokens[-1]
        if isinstance(p, list):
            return p.pop(int(last))
        if last not in p:
            raise ValueError("Unable to remove nonexistent key: %s: missing value" % last)
        return p.pop(last)

    def add(tokens, value):
        nonlocal doc
        if not tokens:
            doc = value
            return
        p = parent(tokens)
        last = tokens[-1]
        if isinstance(p, list):
            if last == "-":
                p.append(value)
            else:
                i = int(last)
                if i < 0 or i > len(p):
                    raise ValueError("add operation does not apply: index out of range")
                p.insert(i, value)
        elif isinstance(p, dict):
            p[last] = value
        else:
            raise ValueError("add operation does not apply")

    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise ValueError("invalid JSON patch operation")
        kind = op["op"]
        tokens = _ptr_tokens(op["path"])
        try:
            if kind == "add":
                add(tokens, jcopy(op.get("value")))
            elif kind == "remove":
                remove(tokens)
            elif kind == "replace":
                if tokens:
                    get(tokens)
                    remove(tokens)
                add(tokens, jcopy(op.get("value")))
            elif kind == "move":
                v = remove(_ptr_tokens(op["from"]))
                add(tokens, v)
            elif kind == "copy":
                add(tokens, jcopy(get(_ptr_tokens(op["from"]))))
            elif kind == "test":
                if get(tokens) != op.get("value"):
                    raise PatchTestFailed("testing value %s failed" % op["path"])
            else:
                raise ValueError("Unexpected kind: %s" % kind)
        except (IndexError, KeyError, TypeError) as e:
            raise ValueError("%s operation does not apply: doc is missing path: %s (%s)"
                             % (kind, op["path"], e))
    return doc


class PatchTestFailed(ValueError):
    pass


# ----------------------------------------------------------------------------------------
# managedFields (a simplified field-set tracker: enough for the shapes in the recordings)
# ----------------------------------------------------------------------------------------

SYSTEM_META = {"name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp",
               "deletionTimestamp", "deletionGracePeriodSeconds", "managedFields", "selfLink"}


def _fieldset(v, dot):
    if isinstance(v, dict):
        if not v:
            return {}
        out = {".": {}} if dot else {}
        for k in v:
            out["f:" + k] = _fieldset(v[k], True)
        return out
    if isinstance(v, list) and v and all(isinstance(x, dict) and "name" in x for x in v):
        out = {}
        for x in v:
            key = "k:" + json.dumps({"name": x["name"]}, separators=(",", ":"))
            sub = {".": {}}
            for k in x:
                sub["f:" + k] = _fieldset(x[k], True)
            out[key] = sub
        return out
    return {}


def fields_v1(obj, include_status, builtin):
    fs = {}
    md = obj.get("metadata") or {}
    mfs = {}
    for k in ("labels", "annotations", "finalizers", "ownerReferences", "generateName"):
        if k in md and md[k] not in (None, {}, []):
            mfs["f:" + k] = _fieldset(md[k], True) if k in ("labels", "annotations") else {}
    if mfs:
        fs["f:metadata"] = mfs
    for k, v in obj.items():
        if k in ("apiVersion", "kind", "metadata"):
            continue
        if k == "status" and not include_status:
            continue
        if v in (None,):
            continue
        fs["f:" + k] = _fieldset(v, not builtin)
    return fs


def _merge_fs(a, b):
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge_fs(out[k], v) if k in out and isinstance(out[k], dict) else v
    return out


# ----------------------------------------------------------------------------------------
# Resource types
# ----------------------------------------------------------------------------------------

COMMON_FIELDS = ("metadata.name", "metadata.namespace")
POD_FIELDS = ("spec.nodeName", "spec.restartPolicy", "spec.schedulerName",
              "spec.serviceAccountName", "spec.hostNetwork", "status.phase", "status.podIP",
              "status.nominatedNodeName")
EVENT_FIELDS = ("involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
                "involvedObject.uid", "involvedObject.apiVersion",
                "involvedObject.resourceVersion", "involvedObject.fieldPath", "reason",
                "reportingComponent", "source", "type")

NAME_DESC = ("Name must be unique within a namespace. Is required when creating resources, "
             "although some resources may allow a client to request the generation of an "
             "appropriate name automatically. Name is primarily intended for creation "
             "idempotence and configuration definition. Cannot be updated. More info: "
             "http://kubernetes.io/docs/user-guide/identifiers#names")


class ResourceType:
    def __init__(self, group, version, plural, kind, namespaced, singular=None,
                 short_names=(), categories=(), status=False, builtin=False,
                 printer_columns=None, schema=None, extra_fields=(), subresources=(),
                 unconditional_update=None, return_deleted=False, graceful=False,
                 generation=None, crd_name=None):
        self.group = group
        self.version = version
        self.plural = plural
        self.kind = kind
        self.namespaced = namespaced
        self.singular = singular or kind.lower()
        self.short_names = list(short_names)
        self.categories = list(categories)
        self.status = status
        self.builtin = builtin
        self.printer_columns = printer_columns  # list of CRD additionalPrinterColumns
        self.schema = schema
        self.extra_fields = tuple(extra_fields)
        self.subresources = list(subresources)
        self.unconditional_update = (builtin if unconditional_update is None
                                     else unconditional_update)
        self.return_deleted = return_deleted
        self.graceful = graceful
        self.generation = (not builtin) if generation is None else generation
        self.crd_name = crd_name

    @property
    def key(self):
        return (self.group, self.plural)

    @property
    def key_str(self):
        return (self.group + "/" if self.group else "core/") + self.plural

    @property
    def api_version(self):
        return self.group + "/" + self.version if self.group else self.version

    @property
    def gv_path(self):
        return "/apis/%s/%s" % (self.group, self.version) if self.group else "/api/v1"

    @property
    def qualified(self):
        return self.plural + ("." + self.group if self.group else "")

    @property
    def qualified_kind(self):
        return self.kind + ("." + self.group if self.group else "")

    def field_labels(self):
        return set(COMMON_FIELDS) | set(self.extra_fields)

    def fields_of(self, obj):
        md = obj.get("metadata") or {}
        f = {"metadata.name": md.get("name", ""), "metadata.namespace": md.get("namespace", "")}
        for path in self.extra_fields:
            if path == "source":
                f[path] = field_str(get_path(obj, "source.component"))
            else:
                f[path] = field_str(get_path(obj, path))
        return f

    def verbs(self):
        return ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


def _col(name, jp, typ="string", prio=0, desc=None, fmt=""):
    return {"name": name, "type": typ, "jsonPath": jp, "priority": prio,
            "description": desc or "Custom resource definition column (in JSONPath format): %s" % jp,
            "format": fmt}


SUBNET_SCHEMA = {
    "type": "object",
    "properties": {
        "apiVersion": {"type": "string"}, "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "properties": {
                "default": {"type": "boolean"},
                "vpc": {"type": "string"},
                "protocol": {"type": "string", "enum": ["IPv4", "IPv6", "Dual"]},
                "cidrBlock": {"type": "string"},
                "namespaces": {"type": "array", "items": {"type": "string"}},
                "gateway": {"type": "string"},
                "provider": {"type": "string"},
                "excludeIps": {"type": "array", "items": {"type": "string"}},
                "vips": {"type": "array", "items": {"type": "string"}},
                "gatewayType": {"type": "string"},
                "allowSubnets": {"type": "array", "items": {"type": "string"}},
                "gatewayNode": {"type": "string"},
                "natOutgoing": {"type": "boolean"},
                "externalEgressGateway": {"type": "string"},
                "policyRoutingPriority": {"type": "integer"},
                "policyRoutingTableID": {"type": "integer"},
                "private": {"type": "boolean"},
                "vlan": {"type": "string"},
                "logicalGateway": {"type": "boolean"},
                "disableGatewayCheck": {"type": "boolean"},
                "disableInterConnection": {"type": "boolean"},
                "enableDHCP": {"type": "boolean"},
                "dhcpV4Options": {"type": "string"},
                "dhcpV6Options": {"type": "string"},
                "enableIPv6RA": {"type": "boolean"},
                "ipv6RAConfigs": {"type": "string"},
                "acls": {"type": "array", "items": {"type": "object",
                                                    "x-kubernetes-preserve-unknown-fields": True}},
                "u2oInterconnection": {"type": "boolean"},
                "enableLb": {"type": "boolean"},
                "enableEcmp": {"type": "boolean"},
                "routeTable": {"type": "string"},
                "mtu": {"type": "integer"},
            },
        },
        "status": {
            "type": "object",
            "properties": {
                "v4availableIPs": {"type": "number"}, "v4usingIPs": {"type": "number"},
                "v6availableIPs": {"type": "number"}, "v6usingIPs": {"type": "number"},
                "v4availableIPrange": {"type": "string"}, "v4usingIPrange": {"type": "string"},
                "v6availableIPrange": {"type": "string"}, "v6usingIPrange": {"type": "string"},
                "activateGateway": {"type": "string"}, "dhcpV4OptionsUUID": {"type": "string"},
                "dhcpV6OptionsUUID": {"type": "string"}, "u2oInterconnectionIP": {"type": "string"},
                "conditions": {"type": "array", "items": {
                    "type": "object",
                    "properties": {"type": {"type": "string"}, "status": {"type": "string"},
                                   "reason": {"type": "string"}, "message": {"type": "string"},
                                   "lastUpdateTime": {"type": "string"},
                                   "lastTransitionTime": {"type": "string"},
                                   "observedGeneration": {"type": "integer"}}}},
            },
        },
    },
}

SUBNET_COLUMNS = [
    _col("Provider", ".spec.provider"), _col("Vpc", ".spec.vpc"),
    _col("Protocol", ".spec.protocol"), _col("CIDR", ".spec.cidrBlock"),
    _col("Private", ".spec.private", "boolean"), _col("NAT", ".spec.natOutgoing", "boolean"),
    _col("Default", ".spec.default", "boolean"), _col("GatewayType", ".spec.gatewayType"),
    _col("V4Used", ".status.v4usingIPs", "number"),
    _col("V4Available", ".status.v4availableIPs", "number"),
    _col("V6Used", ".status.v6usingIPs", "number"),
    _col("V6Available", ".status.v6availableIPs", "number"),
    _col("ExcludeIPs", ".spec.excludeIps"),
]

IPPOOL_COLUMNS = [
    _col("Subnet", ".spec.subnet"), _col("IPs", ".spec.ips"),
    _col("V4Used", ".status.v4UsingIPs", "number"),
    _col("V4Available", ".status.v4AvailableIPs", "number"),
    _col("V6Used", ".status.v6UsingIPs", "number"),
    _col("V6Available", ".status.v6AvailableIPs", "number"),
]

IP_COLUMNS = [
    _col("V4IP", ".spec.v4IpAddress"), _col("V6IP", ".spec.v6IpAddress"),
    _col("Mac", ".spec.macAddress"), _col("Node", ".spec.nodeName"), _col("Subnet", ".spec.subnet"),
]

IPBLOCK_COLUMNS = [
    _col("Subnet", ".spec.subnet"), _col("CIDR", ".spec.cidr"), _col("Node", ".spec.node"),
    _col("Age", ".metadata.creationTimestamp", "date"),
]


def builtin_types():
    return [
        ResourceType("", "v1", "namespaces", "Namespace", False, short_names=["ns"],
                     status=True, builtin=True, extra_fields=("status.phase",),
                     return_deleted=True),
        ResourceType("", "v1", "pods", "Pod", True, short_names=["po"], categories=["all"],
                     status=True, builtin=True, extra_fields=POD_FIELDS,
                     subresources=["binding", "status"], return_deleted=True, graceful=True),
        ResourceType("", "v1", "nodes", "Node", False, short_names=["no"], status=True,
                     builtin=True, extra_fields=("spec.unschedulable",)),
        ResourceType("", "v1", "events", "Event", True, short_names=["ev"], builtin=True,
                     extra_fields=EVENT_FIELDS),
        ResourceType("coordination.k8s.io", "v1", "leases", "Lease", True, builtin=True),
        # Only stored: no controller creates pods for it. The node shards read it to tell
        # whether a StatefulSet pod's address is still wanted. (No `scale` subresource.)
        ResourceType("apps", "v1", "statefulsets", "StatefulSet", True, short_names=["sts"],
                     categories=["all"], status=True, builtin=True, subresources=["status"],
                     generation=True),
        ResourceType("apiextensions.k8s.io", "v1", "customresourcedefinitions",
                     "CustomResourceDefinition", False, short_names=["crd", "crds"],
                     categories=["api-extensions"], status=True, builtin=True, generation=True),
    ]


def default_crds():
    return [
        dict(group="kubeovn.io", version="v1", plural="subnets", kind="Subnet",
             scope="Cluster", shortNames=["subnet"], status=True,
             printerColumns=SUBNET_COLUMNS, schema=SUBNET_SCHEMA),
        # Kube-OVN's IPPool (packaging/kubernetes/crd-ippool.yaml): every daemon watches them.
        dict(group="kubeovn.io", version="v1", plural="ippools", kind="IPPool",
             scope="Cluster", shortNames=["ippool"], status=True,
             printerColumns=IPPOOL_COLUMNS, schema=None),
        # Kube-OVN's IP (packaging/kubernetes/crd-ip.yaml): one per allocation.
        dict(group="kubeovn.io", version="v1", plural="ips", kind="IP",
             scope="Cluster", shortNames=["ip"], status=False,
             printerColumns=IP_COLUMNS, schema=None),
        dict(group="sublease.io", version="v1alpha1", plural="ipblocks", kind="IPBlock",
             scope="Cluster", shortNames=["ipb"], status=False,
             printerColumns=IPBLOCK_COLUMNS, schema=None),
    ]


def crd_object_from_short(d):
    """Control-API short form -> an apiextensions.k8s.io/v1 CustomResourceDefinition."""
    group, plural, kind = d["group"], d["plural"], d["kind"]
    version = d.get("version", "v1")
    schema = d.get("schema") or {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    ver = {"name": version, "served": True, "storage": True,
           "schema": {"openAPIV3Schema": schema}}
    if d.get("status"):
        ver["subresources"] = {"status": {}}
    cols = d.get("printerColumns") or []
    if cols:
        ver["additionalPrinterColumns"] = [
            {k: v for k, v in c.items() if k in ("name", "type", "jsonPath", "priority",
                                                  "description", "format") and v not in ("", None)}
            for c in cols]
    names = {"plural": plural, "singular": d.get("singular") or kind.lower(), "kind": kind,
             "listKind": kind + "List"}
    if d.get("shortNames"):
        names["shortNames"] = list(d["shortNames"])
    if d.get("categories"):
        names["categories"] = list(d["categories"])
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "%s.%s" % (plural, group)},
            "spec": {"group": group, "names": names,
                     "scope": d.get("scope", "Namespaced"), "versions": [ver]}}


def type_from_crd(crd):
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    versions = [v for v in spec.get("versions") or [] if v.get("served", True)]
    if not versions:
        raise ValueError("no served version")
    ver = next((v for v in versions if v.get("storage")), versions[0])
    schema = ((ver.get("schema") or {}).get("openAPIV3Schema"))
    cols = ver.get("additionalPrinterColumns")
    status = "status" in (ver.get("subresources") or {})
    return ResourceType(spec["group"], ver["name"], names["plural"], names["kind"],
                        spec.get("scope", "Namespaced") == "Namespaced",
                        singular=names.get("singular"), short_names=names.get("shortNames") or [],
                        categories=names.get("categories") or [], status=status, builtin=False,
                        printer_columns=cols, schema=schema,
                        subresources=["status"] if status else [],
                        crd_name=(crd.get("metadata") or {}).get("name"))


# ----------------------------------------------------------------------------------------
# The store: objects, one global resourceVersion, per-resource event windows
# ----------------------------------------------------------------------------------------


class Entry:
    """A stored object.  Stored objects are never mutated, so their JSON and their field
    labels can be cached (the API server's watch cache keeps both with each object, so a
    watch's field selector costs a comparison per event, not a walk of the object)."""
    __slots__ = ("obj", "rv", "_json", "_fields")

    def __init__(self, obj, rv):
        self.obj = obj
        self.rv = rv
        self._json = None
        self._fields = None

    def json(self):
        if self._json is None:
            self._json = dumps(self.obj)
        return self._json

    def fields(self, rt):
        if self._fields is None or self._fields[0] is not rt:
            self._fields = (rt, rt.fields_of(self.obj))
        return self._fields[1]


class Waiter:
    """One watch's end of the event dispatch. As in the API server's cacher, a write hands
    each event only to the watches it concerns, each with its own due time (Timing), and
    wakes only those: a node's pod watch (fieldSelector spec.nodeName) is not woken for
    other nodes' pods. `queued` is the newest event of the resource offered, wanted or not."""
    __slots__ = ("cond", "wants", "pending", "queued", "prev_due", "plural")

    def __init__(self, lock, wants, queued, plural):
        self.cond = threading.Condition(lock)
        self.wants = wants
        self.pending = collections.deque()   # (due, Event), in order
        self.queued = queued
        self.prev_due = 0.0
        self.plural = plural

    def offer(self, ev, timing):
        """Caller holds the store lock."""
        self.queued = max(self.queued, ev.rv)
        try:
            wanted = ev.entry.obj is None or self.wants(ev)
        except Exception:
            wanted = True    # the watch's own loop decides (and reports) it
        if not wanted:
            return
        # Each event is due at max(previous due, commit + a drawn delay): late, in order.
        delay = timing.watch_delay(self.plural) if timing is not None and timing.watch_delays_on() else 0.0
        self.prev_due = max(self.prev_due, ev.t + delay)
        self.pending.append((self.prev_due, ev))
        self.cond.notify()


class Event:
    # t: commit time (monotonic).  cache_at: when the watch cache shows it to
    # resourceVersion=0 reads (t unless watch delays are on; see Timing).
    __slots__ = ("rv", "type", "entry", "prev", "t", "cache_at")

    def __init__(self, rv, typ, entry, prev):
        self.rv = rv
        self.type = typ
        self.entry = entry
        self.prev = prev
        self.t = self.cache_at = time.monotonic()


class EventLog:
    """The watch cache of one resource: the last `window` events.  A watch (or an Exact
    list) from resourceVersion R can be served iff R >= start_rv."""

    def __init__(self, window, start_rv):
        self.window = window
        self.start_rv = start_rv
        self.rvs = []
        self.events = []
        self.head = 0

    def append(self, ev):
        if self.events:   # the watch cache shows events in order
            ev.cache_at = max(ev.cache_at, self.events[-1].cache_at)
        self.rvs.append(ev.rv)
        self.events.append(ev)
        if len(self.events) - self.head > self.window:
            self.start_rv = self.rvs[self.head]
            self.head += 1
            if self.head > 1024 and self.head > self.window:
                del self.rvs[:self.head]
                del self.events[:self.head]
                self.head = 0

    def since(self, rv):
        i = bisect.bisect_right(self.rvs, rv, self.head)
        return self.events[i:]

    def compact(self, rv):
        self.start_rv = rv
        self.rvs = []
        self.events = []
        self.head = 0


class Store:
    def __init__(self, window):
        self.lock = threading.RLock()
        self.rv = 1
        self.window = window
        self.types = {}
        self.objs = {}
        self.logs = {}
        self.waiters = {}     # rt.key -> set of Waiter (the open watches)
        self.any_change = threading.Condition(self.lock)
        self.stopping = False
        self.watch_gen = 0
        self.watch_drop_mode = "clean"
        self.compact_rv = 0
        self.started_rv = 1
        self.on_change = None
        self.timing = None

    # -- types --
    def add_type(self, rt):
        with self.lock:
            old = self.types.get(rt.key)
            self.types[rt.key] = rt
            if old is None:
                self.objs.setdefault(rt.key, {})
                self.logs[rt.key] = EventLog(self.window, self.rv)

    def remove_type(self, key):
        with self.lock:
            rt = self.types.pop(key, None)
            if rt is None:
                return
            for k, e in list(self.objs.get(key, {}).items()):
                self._write(rt, k, None, e, "DELETED")
            self.objs.pop(key, None)
            self.logs.pop(key, None)
            for w in self.waiters.get(key, ()):
                w.cond.notify_all()

    def find_type(self, group, version, plural):
        rt = self.types.get((group, plural))
        if rt is None or rt.version != version:
            return None
        return rt

    # -- writes --
    def next_rv(self):
        self.rv += 1
        return self.rv

    def _write(self, rt, key, new_obj, prev_entry, typ):
        """Caller holds the lock.  new_obj already carries metadata.resourceVersion = self.rv."""
        rv = self.rv
        entry = Entry(new_obj, rv)
        table = self.objs[rt.key]
        if typ == "DELETED":
            table.pop(key, None)
        else:
            table[key] = entry
        log = self.logs.get(rt.key)
        if log is not None:
            ev = Event(rv, typ, entry, prev_entry)
            if self.timing is not None and self.timing.watch_delays_on():
                ev.cache_at = ev.t + self.timing.watch_delay(rt.plural)
            log.append(ev)
            for w in self.waiters.get(rt.key, ()):
                w.offer(ev, self.timing)
        self.any_change.notify_all()
        if self.on_change:
            self.on_change(rv)
        return entry

    def compact(self):
        with self.lock:
            for log in self.logs.values():
                log.compact(self.rv)
            self.compact_rv = self.rv
            self.wake_watches()
            return self.rv

    def wake_watches(self):
        """Caller holds the lock: every open watch looks at the store again."""
        for ws in self.waiters.values():
            for w in ws:
                w.cond.notify_all()

    def wake_all(self):
        with self.lock:
            self.wake_watches()
            self.any_change.notify_all()

    def snapshot_at(self, rt, rv):
        """The objects of one resource as they were at resourceVersion rv (rolls back from
        the current state through the event window).  Caller holds the lock."""
        state = dict(self.objs[rt.key])
        for ev in reversed(self.logs[rt.key].since(rv)):
            md = ev.entry.obj["metadata"]
            key = (md.get("namespace", ""), md["name"])
            if ev.type == "ADDED":
                state.pop(key, None)
            else:
                state[key] = ev.prev
        return state

    def cache_view(self, rt):
        """(resourceVersion, objects) of one resource as the watch cache shows them now:
        events whose cache_at has not come yet are rolled back.  Caller holds the lock."""
        log = self.logs[rt.key]
        now = time.monotonic()
        first_hidden = None
        for i in range(len(log.events) - 1, log.head - 1, -1):
            if log.events[i].cache_at <= now:
                break
            first_hidden = log.events[i]
        if first_hidden is None or first_hidden.rv - 1 < log.start_rv:
            return self.rv, self.objs[rt.key]
        return first_hidden.rv - 1, self.snapshot_at(rt, first_hidden.rv - 1)

    def dump(self):
        with self.lock:
            return {"resourceVersion": str(self.rv),
                    "objects": {self.types[k].key_str: [e.obj for _, e in sorted(t.items())]
                                for k, t in self.objs.items() if k in self.types}}


# ----------------------------------------------------------------------------------------
# Persistence (a JSON snapshot, group-committed, flushed before a write is answered)
# ----------------------------------------------------------------------------------------


class Persister:
    def __init__(self, path, store):
        self.path = path
        self.store = store
        self.cond = threading.Condition()
        self.dirty_rv = 0
        self.written_rv = 0
        self.stop = False
        self.error = None
        self.thread = threading.Thread(target=self._run, name="persister", daemon=True)

    def start(self):
        self.thread.start()

    def load(self):
        if not self.path or not os.path.exists(self.path):
            return None
        with open(self.path) as f:
            return json.load(f)

    def mark(self, rv):
        with self.cond:
            if rv > self.dirty_rv:
                self.dirty_rv = rv
                self.cond.notify_all()

    def flush(self, rv, timeout=30.0):
        """Waits until a snapshot that contains resourceVersion rv is on disk."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.written_rv < rv and not self.stop:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(min(left, 0.5))
            return self.written_rv >= rv

    def _snapshot(self):
        """Copies references under the lock (stored objects are immutable) and serialises
        outside it, reusing each object's cached JSON."""
        st = self.store
        with st.lock:
            rv = st.rv
            tables = {k: list(t.values()) for k, t in st.objs.items()}
        parts = [b'{"version":1,"resourceVersion":%d,"objects":{' % rv]
        first = True
        for k, entries in tables.items():
            parts.append((b"" if first else b",") + dumps("%s/%s" % k) + b":[")
            parts.append(b",".join(e.json() for e in entries))
            parts.append(b"]")
            first = False
        parts.append(b"}}")
        return rv, b"".join(parts)

    def write_now(self):
        rv, data = self._snapshot()
        d = os.path.dirname(os.path.abspath(self.path))
        fd, tmp = tempfile.mkstemp(prefix=".persist-", dir=d)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        with self.cond:
            self.written_rv = max(self.written_rv, rv)
            self.cond.notify_all()

    def _run(self):
        while True:
            with self.cond:
                while self.dirty_rv <= self.written_rv and not self.stop:
                    self.cond.wait(0.5)
                if self.stop and self.dirty_rv <= self.written_rv:
                    return
            try:
                self.write_now()
            except Exception as e:  # keep serving; report through the control API
                self.error = repr(e)
                time.sleep(0.1)

    def close(self):
        with self.cond:
            self.stop = True
            self.cond.notify_all()
        self.thread.join(timeout=10)
        if self.dirty_rv > self.written_rv:
            self.write_now()


# ----------------------------------------------------------------------------------------
# The fake kubelet: finishes graceful pod deletions when their grace period has passed
# ----------------------------------------------------------------------------------------


class Kubelet:
    def __init__(self, api, grace_scale):
        self.api = api
        self.grace_scale = grace_scale   # seconds of grace are multiplied by this
        self.delay_ms = None             # if set: every terminating pod finishes after this
        self.enabled = True
        self.heap = []
        self.cond = threading.Condition()
        self.stop = False
        self.thread = threading.Thread(target=self._run, name="kubelet", daemon=True)

    def start(self):
        self.thread.start()

    def configure(self, body):
        with self.cond:
            if "enabled" in body:
                self.enabled = bool(body["enabled"])
            if "grace_scale" in body:
                self.grace_scale = float(body["grace_scale"])
                self.delay_ms = None
            if "delay_ms" in body:
                self.delay_ms = None if body["delay_ms"] is None else float(body["delay_ms"])
            # re-plan everything that is pending
            items = [(ns, name, uid, grace) for (_, ns, name, uid, grace) in self.heap]
            self.heap = []
            now = time.monotonic()
            for ns, name, uid, grace in items:
                heapq.heappush(self.heap, (now + self._delay(grace), ns, name, uid, grace))
            self.cond.notify_all()
            return {"enabled": self.enabled, "grace_scale": self.grace_scale,
                    "delay_ms": self.delay_ms}

    def _delay(self, grace):
        if self.delay_ms is not None:
            return self.delay_ms / 1000.0
        return max(0.0, grace * self.grace_scale)

    def schedule(self, ns, name, uid, grace):
        with self.cond:
            heapq.heappush(self.heap, (time.monotonic() + self._delay(grace), ns, name, uid, grace))
            self.cond.notify_all()

    def _run(self):
        while True:
            with self.cond:
                if self.stop:
                    return
                due = []
                now = time.monotonic()
                while self.heap and self.heap[0][0] <= now and self.enabled:
                    due.append(heapq.heappop(self.heap))
                if not due:
                    wait = 0.5
                    if self.heap and self.enabled:
                        wait = min(wait, max(0.0, self.heap[0][0] - now))
                    self.cond.wait(wait)
                    continue
            for (_, ns, name, uid, _) in due:
                try:
                    self.api.kubelet_finish(ns, name, uid)
                except Exception:
                    traceback.print_exc()

    def close(self):
        with self.cond:
            self.stop = True
            self.cond.notify_all()
        self.thread.join(timeout=5)


# ----------------------------------------------------------------------------------------
# Tables (Accept: application/json;as=Table;v=v1;g=meta.k8s.io)
# ----------------------------------------------------------------------------------------


def jsonpath_get(obj, jp):
    """Enough JSONPath for printer columns: .a.b, .a[0].b, .a[?(@.k=="v")].b"""
    jp = jp.strip()
    if jp.startswith("{") and jp.endswith("}"):
        jp = jp[1:-1]
    cur = [obj]
    for tok in re.findall(r"\.([^.\[]+)|\[([^\]]*)\]", jp):
        name, idx = tok
        nxt = []
        for c in cur:
            if name:
                if isinstance(c, dict) and name in c:
                    nxt.append(c[name])
            elif idx == "*":
                if isinstance(c, list):
                    nxt.extend(c)
            elif idx.startswith("?("):
                m = re.match(r"\?\(@\.([\w.-]+)\s*==\s*['\"]?([^'\"]*)['\"]?\)", idx)
                if m and isinstance(c, list):
                    nxt.extend(x for x in c if isinstance(x, dict)
                               and field_str(get_path(x, m.group(1))) == m.group(2))
            else:
                try:
                    if isinstance(c, list):
                        nxt.append(c[int(idx)])
                except (ValueError, IndexError):
                    pass
        cur = nxt
    return cur


def _cell(col, obj):
    vals = jsonpath_get(obj, col["jsonPath"])
    if not vals:
        return None
    v = vals[0]
    t = col.get("type", "string")
    if t == "date":
        ts = parse_rfc3339(v) if isinstance(v, str) else None
        return human_duration(now_ts() - ts) if ts is not None else v
    if isinstance(v, (dict, list)):
        return json.dumps(v, separators=(",", ":"))
    if t == "string" and not isinstance(v, str):
        return field_str(v)
    return v


def _age(obj):
    ts = parse_rfc3339((obj.get("metadata") or {}).get("creationTimestamp"))
    return human_duration(now_ts() - ts) if ts is not None else "<unknown>"


NAME_COL = {"name": "Name", "type": "string", "format": "name", "description": NAME_DESC,
            "priority": 0}
AGE_COL = {"name": "Age", "type": "string", "format": "",
           "description": "CreationTimestamp is a timestamp representing the server time when "
                          "this object was created.", "priority": 0}


def _c(name, typ="string", prio=0, desc=""):
    return {"name": name, "type": typ, "format": "", "description": desc, "priority": prio}


def _pod_row(o):
    st = o.get("status") or {}
    cs = st.get("containerStatuses") or []
    total = len((o.get("spec") or {}).get("containers") or [])
    ready = sum(1 for c in cs if c.get("ready"))
    phase = st.get("reason") or st.get("phase") or ""
    if (o.get("metadata") or {}).get("deletionTimestamp"):
        phase = "Terminating"
    restarts = sum(int(c.get("restartCount") or 0) for c in cs)
    return ["%d/%d" % (ready, total), phase, restarts, _age(o), st.get("podIP") or "<none>",
            (o.get("spec") or {}).get("nodeName") or "<none>",
            st.get("nominatedNodeName") or "<none>", "<none>"]


def _node_row(o):
    conds = (o.get("status") or {}).get("conditions") or []
    ready = next((c.get("status") for c in conds if c.get("type") == "Ready"), None)
    s = {"True": "Ready", "False": "NotReady"}.get(ready, "Unknown")
    if (o.get("spec") or {}).get("unschedulable"):
        s += ",SchedulingDisabled"
    ver = ((o.get("status") or {}).get("nodeInfo") or {}).get("kubeletVersion") or ""
    return [s, "<none>", _age(o), ver]


BUILTIN_TABLES = {
    "Pod": ([_c("Ready"), _c("Status"), _c("Restarts", "string"), AGE_COL, _c("IP", prio=1),
             _c("Node", prio=1), _c("Nominated Node", prio=1), _c("Readiness Gates", prio=1)],
            _pod_row),
    "Node": ([_c("Status"), _c("Roles"), AGE_COL, _c("Version")], _node_row),
    "Namespace": ([_c("Status"), AGE_COL],
                  lambda o: [(o.get("status") or {}).get("phase") or "Active", _age(o)]),
    "Lease": ([_c("Holder"), AGE_COL],
              lambda o: [(o.get("spec") or {}).get("holderIdentity") or "", _age(o)]),
    "Event": ([_c("Last Seen"), _c("Type"), _c("Reason"), _c("Object"), _c("Message")],
              lambda o: [_age(o), o.get("type") or "", o.get("reason") or "",
                         "%s/%s" % (((o.get("involvedObject") or {}).get("kind") or "").lower(),
                                    (o.get("involvedObject") or {}).get("name") or ""),
                         o.get("message") or ""]),
    "CustomResourceDefinition": ([_c("Created At", "date")],
                                 lambda o: [(o.get("metadata") or {}).get("creationTimestamp")]),
}


def table_columns(rt):
    if rt.builtin:
        cols, _ = BUILTIN_TABLES.get(rt.kind, ([AGE_COL], None))
        return [NAME_COL] + cols
    if rt.printer_columns is None:
        return [NAME_COL, dict(AGE_COL)]
    out = [NAME_COL]
    for c in rt.printer_columns:
        out.append({"name": c["name"], "type": "string" if c.get("type") == "date" else c.get("type", "string"),
                    "format": c.get("format", ""),
                    "description": c.get("description") or
                    "Custom resource definition column (in JSONPath format): %s" % c["jsonPath"],
                    "priority": c.get("priority", 0)})
    return out


def table_cells(rt, obj):
    name = (obj.get("metadata") or {}).get("name")
    if rt.builtin:
        _, fn = BUILTIN_TABLES.get(rt.kind, (None, None))
        return [name] + (fn(obj) if fn else [_age(obj)])
    if rt.printer_columns is None:
        return [name, _age(obj)]
    return [name] + [_cell(c, obj) for c in rt.printer_columns]


def partial_metadata(obj, mode):
    if mode == "None":
        return None
    if mode == "Object":
        return obj
    md = obj.get("metadata") or {}
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
            "metadata": order_keys(md, META_ORDER)}


def make_table(rt, objs, list_meta, include_object, with_columns=True):
    rows = []
    for o in objs:
        row = {"cells": table_cells(rt, o)}
        po = partial_metadata(o, include_object)
        if po is not None:
            row["object"] = po
        rows.append(row)
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta,
            "columnDefinitions": table_columns(rt) if with_columns else [], "rows": rows}


def wants_table(accept):
    return bool(accept) and "as=Table" in accept and "g=meta.k8s.io" in accept


# ----------------------------------------------------------------------------------------
# The API: what every request does
# ----------------------------------------------------------------------------------------


class Ctx:
    """Per-request context."""

    def __init__(self, user="system:admin", manager="unknown", dry=False):
        self.user = user
        self.manager = manager
        self.manager_explicit = False
        self.dry = dry
        self.wrote_rv = 0


POD_TOLERATIONS = [
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
     "tolerationSeconds": 300},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute",
     "tolerationSeconds": 300},
]


def pod_defaults(obj, status=True):
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    for c in spec.get("containers") or []:
        if not isinstance(c, dict):
            continue
        c.setdefault("resources", {})
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
        img = c.get("image") or ""
        tagged = ":" in img.rsplit("/", 1)[-1] or "@" in img
        latest = img.endswith(":latest") or not tagged
        c.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    tol = spec.setdefault("tolerations", [])
    for t in POD_TOLERATIONS:
        if not any(isinstance(x, dict) and x.get("key") == t["key"] for x in tol):
            tol.append(dict(t))
    spec.setdefault("priority", 0)
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    has_req = any(isinstance(c, dict) and ((c.get("resources") or {}).get("requests") or
                                           (c.get("resources") or {}).get("limits"))
                  for c in spec.get("containers") or [])
    if status:
        obj["status"] = {"phase": "Pending", "qosClass": "Burstable" if has_req else "BestEffort"}


POD_UPDATE_FORBIDDEN = (
    "Forbidden: pod updates may not change fields other than `spec.containers[*].image`, "
    "`spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` (only "
    "additions to existing tolerations) or `spec.terminationGracePeriodSeconds` (allow it to "
    "be set to 1 if it was previously negative)")


def _pod_spec_mutable_masked(spec):
    s = jcopy(spec or {})
    for f in ("containers", "initContainers"):
        for c in s.get(f) or []:
            if isinstance(c, dict):
                c.pop("image", None)
    s.pop("activeDeadlineSeconds", None)
    s.pop("tolerations", None)
    return s


def _strip_volatile(obj):
    o = dict(obj)
    md = dict(o.get("metadata") or {})
    md.pop("resourceVersion", None)
    md.pop("managedFields", None)
    o["metadata"] = md
    return o


def decode_continue(token):
    try:
        raw = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_")
        d = json.loads(raw)
        return int(d["rv"]), d["start"]
    except Exception:
        raise err_bad_request("continue key is not valid: illegal base64 data at input byte 0")


def encode_continue(rv, key):
    start = "%s/%s" % key
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start + "\x00"},
                     separators=(",", ":")).encode()
    return base64.b64encode(raw, altchars=b"-_").decode().rstrip("=")


def _key_from_start(start):
    start = start.rstrip("\x00")
    ns, _, name = start.rpartition("/")
    return (ns, name)


class Api:
    def __init__(self, args):
        self.args = args
        self.store = Store(args.watch_window)
        self.store.on_change = self._on_change
        self.persister = Persister(args.persist, self.store) if args.persist else None
        self.kubelet = Kubelet(self, args.pod_grace_scale)
        self.bookmark_interval = args.bookmark_interval
        self.unconditional_crd_update = False
        self.port = 0
        self.active_watches = 0
        self.policy = Policy()
        self.timing = Timing()
        self.store.timing = self.timing

    def _on_change(self, rv):
        if self.persister:
            self.persister.mark(rv)

    # ---- bootstrap ----
    def bootstrap(self):
        st = self.store
        for rt in builtin_types():
            st.add_type(rt)
        snap = self.persister.load() if self.persister else None
        if snap is None and getattr(self.args, "load", None):
            with open(self.args.load) as f:  # --load: start from a snapshot, keep nothing
                snap = json.load(f)
        if snap:
            with st.lock:
                st.rv = int(snap["resourceVersion"])
                crd_objs = snap["objects"].get("apiextensions.k8s.io/customresourcedefinitions", [])
                for o in crd_objs:
                    try:
                        st.add_type(type_from_crd(o))
                    except Exception:
                        pass
                for k, objs in snap["objects"].items():
                    group, _, plural = k.rpartition("/")
                    rt = st.types.get((group, plural))
                    if rt is None:
                        continue
                    for o in objs:
                        md = o["metadata"]
                        st.objs[rt.key][(md.get("namespace", ""), md["name"])] = Entry(
                            o, int(md.get("resourceVersion") or 0))
                # A restarted API server's watch cache starts empty: older versions are gone.
                for log in st.logs.values():
                    log.compact(st.rv)
                st.compact_rv = st.rv
                st.started_rv = st.rv
            # pods that were terminating when we stopped still need their kubelet
            with st.lock:
                for (ns, name), e in st.objs[("", "pods")].items():
                    md = e.obj["metadata"]
                    if md.get("deletionTimestamp") and (md.get("deletionGracePeriodSeconds") or 0) > 0:
                        left = (parse_rfc3339(md["deletionTimestamp"]) or now_ts()) - now_ts()
                        self.kubelet.schedule(ns, name, md.get("uid"), max(0.0, left))
        else:
            ctx = Ctx(manager="kube-apiserver")
            ns_rt = st.types[("", "namespaces")]
            for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
                self.create(ns_rt, "", {"apiVersion": "v1", "kind": "Namespace",
                                        "metadata": {"name": ns}}, ctx)
            crd_rt = st.types[("apiextensions.k8s.io", "customresourcedefinitions")]
            for d in default_crds():
                self.create(crd_rt, "", crd_object_from_short(d), ctx)
            with st.lock:
                st.started_rv = st.rv
        if self.persister:
            self.persister.write_now()
            self.persister.start()
        self.kubelet.start()

    # ---- helpers ----
    def rt_for(self, group, version, plural):
        return self.store.find_type(group, version, plural)

    def _check_ns(self, rt, ns):
        if rt.namespaced and ns:
            if ("", ns) not in self.store.objs[("", "namespaces")] and not self.args.no_namespace_check:
                raise ApiError(404, "NotFound", 'namespaces "%s" not found' % ns,
                               {"name": ns, "kind": "namespaces"})

    def _finish_obj(self, rt, obj):
        return order_builtin(rt, obj) if rt.builtin else sort_deep(obj)

    def _commit(self, rt, key, obj, prev, typ, ctx):
        """Caller holds the lock.  Bumps the global resourceVersion (unless dry run)."""
        if ctx.dry:
            obj["metadata"]["resourceVersion"] = prev.obj["metadata"]["resourceVersion"] if prev else ""
            return Entry(self._finish_obj(rt, obj), prev.rv if prev else 0)
        rv = self.store.next_rv()
        obj["metadata"]["resourceVersion"] = str(rv)
        obj = self._finish_obj(rt, obj)
        ctx.wrote_rv = rv
        return self.store._write(rt, key, obj, prev, typ)

    def _managed(self, old_mf, ctx, operation, subresource, obj_part, rt, include_status):
        ts = rfc3339(now_ts())
        fs = fields_v1(obj_part, include_status, rt.builtin)
        entries = [dict(m) for m in (old_mf or []) if isinstance(m, dict)]
        for m in entries:
            if (m.get("manager") == ctx.manager and m.get("operation") == operation
                    and m.get("subresource") == subresource):
                m["fieldsV1"] = _merge_fs(m.get("fieldsV1") or {}, fs)
                m["time"] = ts
                break
        else:
            if fs:
                e = {"manager": ctx.manager, "operation": operation, "apiVersion": rt.api_version,
                     "time": ts, "fieldsType": "FieldsV1", "fieldsV1": fs}
                if subresource:
                    e["subresource"] = subresource
                entries.append(e)
        return entries

    def _validate_meta(self, rt, obj, causes):
        md = obj.get("metadata")
        name = md.get("name")
        if not name:
            causes.append(("FieldValueRequired", "metadata.name",
                           "Required value: name or generateName is required"))
        elif not isinstance(name, str):
            causes.append(("FieldValueInvalid", "metadata.name", 'Invalid value: "%s": must be a string' % name))
        elif rt.kind == "Namespace":
            if len(name) > 63 or not DNS1123_LABEL.match(name):
                causes.append(("FieldValueInvalid", "metadata.name",
                               'Invalid value: "%s": %s' % (name, LABEL_MSG)))
        elif len(name) > 253 or not DNS1123_SUBDOMAIN.match(name):
            msg = SUBDOMAIN_MSG if len(name) <= 253 else "must be no more than 253 characters"
            causes.append(("FieldValueInvalid", "metadata.name",
                           'Invalid value: "%s": %s' % (name, msg)))
        labels = md.get("labels")
        if labels is not None and not isinstance(labels, dict):
            causes.append(("FieldValueTypeInvalid", "metadata.labels", "Invalid value: must be an object"))
        elif labels:
            for k, v in labels.items():
                for e in qualified_name_errors(k):
                    causes.append(("FieldValueInvalid", "metadata.labels", 'Invalid value: "%s": %s' % (k, e)))
                for e in label_value_errors(v):
                    causes.append(("FieldValueInvalid", "metadata.labels", 'Invalid value: "%s": %s' % (v, e)))
        ann = md.get("annotations")
        if ann is not None and not isinstance(ann, dict):
            causes.append(("FieldValueTypeInvalid", "metadata.annotations", "Invalid value: must be an object"))
        elif ann:
            total = 0
            for k, v in ann.items():
                for e in qualified_name_errors(k):
                    causes.append(("FieldValueInvalid", "metadata.annotations", 'Invalid value: "%s": %s' % (k, e)))
                if not isinstance(v, str):
                    causes.append(("FieldValueTypeInvalid", "metadata.annotations.%s" % k, "Invalid value: must be a string"))
                else:
                    total += len(k) + len(v)
            if total > 262144:
                causes.append(("FieldValueTooLong", "metadata.annotations",
                               "Too long: must have at most 262144 bytes"))
        fin = md.get("finalizers")
        if fin is not None and (not isinstance(fin, list) or not all(isinstance(f, str) for f in fin)):
            causes.append(("FieldValueTypeInvalid", "metadata.finalizers", "Invalid value: must be a list of strings"))

    def _validate_kind(self, rt, obj, causes, old=None):
        if rt.kind == "Pod":
            spec = obj.get("spec") or {}
            cs = spec.get("containers")
            if not cs:
                causes.append(("FieldValueRequired", "spec.containers", "Required value"))
            else:
                for i, c in enumerate(cs):
                    if not isinstance(c, dict) or not c.get("name"):
                        causes.append(("FieldValueRequired", "spec.containers[%d].name" % i, "Required value"))
                    elif not isinstance(c, dict) or not c.get("image"):
                        causes.append(("FieldValueRequired", "spec.containers[%d].image" % i, "Required value"))
            if old is not None and _pod_spec_mutable_masked(old.get("spec")) != _pod_spec_mutable_masked(spec):
                causes.append(("FieldValueForbidden", "spec", POD_UPDATE_FORBIDDEN))
        elif rt.kind == "CustomResourceDefinition":
            spec = obj.get("spec") or {}
            names = spec.get("names") or {}
            for f in ("group",):
                if not spec.get(f):
                    causes.append(("FieldValueRequired", "spec." + f, "Required value"))
            for f in ("plural", "kind"):
                if not names.get(f):
                    causes.append(("FieldValueRequired", "spec.names." + f, "Required value"))
            if not spec.get("versions"):
                causes.append(("FieldValueRequired", "spec.versions", "Required value"))
            if spec.get("scope") not in ("Namespaced", "Cluster"):
                causes.append(("FieldValueNotSupported", "spec.scope",
                               'Unsupported value: %s: supported values: "Cluster", "Namespaced"'
                               % _fmt_val(spec.get("scope"))))
            want = "%s.%s" % (names.get("plural"), spec.get("group"))
            if names.get("plural") and spec.get("group") and obj["metadata"].get("name") != want:
                causes.append(("FieldValueInvalid", "metadata.name",
                               'Invalid value: "%s": must be spec.names.plural+"."+spec.group'
                               % obj["metadata"].get("name")))
            if old is not None and (old.get("spec") or {}).get("group") != spec.get("group"):
                causes.append(("FieldValueInvalid", "spec.group", "field is immutable"))
            if not causes:
                clash = self.store.types.get((spec.get("group"), names.get("plural")))
                if clash is not None and clash.builtin:
                    causes.append(("FieldValueInvalid", "spec.names.plural", "Invalid value: conflicts with a built-in resource"))
        elif not rt.builtin and rt.schema:
            body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
            sch = dict(rt.schema)
            props = {k: v for k, v in (sch.get("properties") or {}).items()
                     if k not in ("apiVersion", "kind", "metadata")}
            sch["properties"] = props
            if "required" in sch:
                sch["required"] = [r for r in sch["required"] if r not in ("apiVersion", "kind", "metadata")]
            schema_validate(sch, body, "", causes)

    def _prune(self, rt, obj, strict):
        if rt.builtin or not rt.schema:
            return obj
        if strict:
            unknown = []
            body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
            sch = dict(rt.schema)
            sch["properties"] = {k: v for k, v in (sch.get("properties") or {}).items()
                                 if k not in ("apiVersion", "kind", "metadata")}
            schema_unknown_fields(sch, body, "", unknown)
            if unknown:
                raise err_bad_request("strict decoding error: " + ", ".join(
                    'unknown field "%s"' % u for u in unknown))
        md = obj.get("metadata")
        out = schema_prune(rt.schema, {k: v for k, v in obj.items() if k != "metadata"})
        out["metadata"] = md
        out["apiVersion"] = obj.get("apiVersion")
        out["kind"] = obj.get("kind")
        return out

    def _check_type_meta(self, rt, obj):
        if not isinstance(obj, dict):
            raise err_bad_request("the object provided is unrecognized (must be of type %s)" % rt.kind)
        av = obj.get("apiVersion")
        kind = obj.get("kind")
        if av and av != rt.api_version:
            raise err_bad_request("the API version in the data (%s) does not match the expected "
                                  "API version (%s)" % (av, rt.api_version))
        if kind and kind != rt.kind:
            raise err_bad_request("the kind in the data (%s) does not match the expected kind (%s)"
                                  % (kind, rt.kind))
        if not rt.builtin and (not av or not kind):
            raise err_bad_request("Object 'Kind' is missing in '%s'" % json.dumps(obj)[:200])
        obj["apiVersion"] = rt.api_version
        obj["kind"] = rt.kind
        md = obj.get("metadata")
        if md is None:
            obj["metadata"] = {}
        elif not isinstance(md, dict):
            raise err_bad_request("metadata must be an object")

    # ---- create ----
    def create(self, rt, ns, body, ctx, strict=False):
        obj = jcopy(body)
        self._check_type_meta(rt, obj)
        md = obj["metadata"]
        if rt.namespaced:
            if md.get("namespace") and md["namespace"] != ns:
                raise err_bad_request("the namespace of the provided object does not match the "
                                      "namespace sent on the request")
            md["namespace"] = ns
        else:
            md.pop("namespace", None)
        if md.get("resourceVersion"):
            raise ApiError(500, "", "resourceVersion should not be set on objects to be created")
        if not md.get("name") and md.get("generateName"):
            md["name"] = md["generateName"] + "".join(
                random.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))
        causes = []
        self._validate_meta(rt, obj, causes)
        self._validate_kind(rt, obj, causes)
        if causes:
            raise err_invalid(rt, md.get("name") or "", causes)
        obj = self._prune(rt, obj, strict)
        md = obj["metadata"]
        for k in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                  "generation", "managedFields", "selfLink"):
            md.pop(k, None)
        if rt.kind == "Pod":
            pod_defaults(obj)
        elif rt.kind == "Namespace":
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            obj["status"] = {"phase": "Active"}
            md.setdefault("labels", {})["kubernetes.io/metadata.name"] = md["name"]
        elif rt.kind == "CustomResourceDefinition":
            obj["status"] = {"conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                 "message": "no conflicts found", "lastTransitionTime": rfc3339(now_ts())},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                 "message": "the initial names have been accepted",
                 "lastTransitionTime": rfc3339(now_ts())}],
                "acceptedNames": (obj.get("spec") or {}).get("names"),
                "storedVersions": [v.get("name") for v in (obj.get("spec") or {}).get("versions") or []
                                   if v.get("storage")]}
        elif rt.status and not rt.builtin:
            obj.pop("status", None)
        with self.store.lock:
            self._check_ns(rt, ns)
            key = (md.get("namespace", ""), md["name"])
            if key in self.store.objs[rt.key]:
                raise err_already_exists(rt, md["name"])
            md["uid"] = str(uuid.uuid4())
            md["creationTimestamp"] = rfc3339(now_ts())
            if rt.generation:
                md["generation"] = 1
            mf = self._managed([], ctx, "Update", None, body if isinstance(body, dict) else {},
                               rt, not rt.status)
            if mf:
                md["managedFields"] = mf
            entry = self._commit(rt, key, obj, None, "ADDED", ctx)
            if rt.kind == "CustomResourceDefinition" and not ctx.dry:
                self.store.add_type(type_from_crd(entry.obj))
            return entry.obj

    # ---- get ----
    def get(self, rt, ns, name):
        with self.store.lock:
            e = self.store.objs[rt.key].get((ns if rt.namespaced else "", name))
            if e is None:
                raise err_not_found(rt, name)
            return e

    # ---- update ----
    def update(self, rt, ns, name, body, ctx, subresource=None, strict=False):
        obj = jcopy(body)
        self._check_type_meta(rt, obj)
        if obj["metadata"].get("name") != name:
            raise err_bad_request("the name of the object (%s) does not match the name on the URL (%s)"
                                  % (obj["metadata"].get("name", ""), name))
        if rt.namespaced and obj["metadata"].get("namespace") not in (None, "", ns):
            raise err_bad_request("the namespace of the provided object does not match the "
                                  "namespace sent on the request")
        with self.store.lock:
            key = (ns if rt.namespaced else "", name)
            existing = self.store.objs[rt.key].get(key)
            if existing is None:
                raise err_not_found(rt, name)
            return self._update_core(rt, key, existing, obj, ctx, subresource, "Update",
                                     body, strict=strict).obj

    def check_not_stale(self, rt, ns, name, raw):
        """An update whose resourceVersion is already not the object's is answered 409 before
        any commit, as the API server's GuaranteedUpdate does: its precondition fails against
        the current object, and no etcd transaction is made. (One that goes stale while it
        waits for its commit pays the commit, as a transaction whose compare fails does.)
        Anything else (a bad body, no such object) is left to the update itself."""
        try:
            rv = (json.loads(raw).get("metadata") or {}).get("resourceVersion")
        except (ValueError, AttributeError, TypeError):
            return
        if rv in (None, ""):
            return
        with self.store.lock:
            existing = self.store.objs.get(rt.key, {}).get((ns if rt.namespaced else "", name))
            if existing is not None and str(rv) != existing.obj["metadata"].get("resourceVersion"):
                raise err_conflict(rt, name)

    def _update_core(self, rt, key, existing, new_obj, ctx, subresource, operation, fs_source,
                     strict=False, rv_optional=False):
        old = existing.obj
        name = key[1]
        omd = old["metadata"]
        nmd = new_obj.get("metadata")
        if not isinstance(nmd, dict):
            nmd = new_obj["metadata"] = {}
        rv = nmd.get("resourceVersion")
        if rv in (None, ""):
            if not (rv_optional or rt.unconditional_update or self.unconditional_crd_update):
                raise err_invalid(rt, name, [("FieldValueInvalid", "metadata.resourceVersion",
                                              "Invalid value: 0x0: must be specified for an update")],
                                  by_resource=True)
        elif str(rv) != omd.get("resourceVersion"):
            raise err_conflict(rt, name)
        if nmd.get("uid") and nmd["uid"] != omd.get("uid"):
            raise err_conflict(rt, name, "Precondition failed: UID in precondition: %s, UID in "
                               "object meta: %s" % (nmd["uid"], omd.get("uid")))
        if subresource == "status":
            result = jcopy(old)
            if "status" in new_obj and new_obj["status"] is not None:
                result["status"] = jcopy(new_obj["status"])
            else:
                result.pop("status", None)
            causes = []
            if not rt.builtin and rt.schema:
                self._validate_kind(rt, result, causes)
            if causes:
                raise err_invalid(rt, name, causes)
            if not rt.builtin and rt.schema:
                result = self._prune(rt, result, strict)
        else:
            result = new_obj
            rmd = result["metadata"]
            for k in ("name", "namespace", "uid", "creationTimestamp", "deletionTimestamp",
                      "deletionGracePeriodSeconds", "generation"):
                if k in omd:
                    rmd[k] = omd[k]
                else:
                    rmd.pop(k, None)
            rmd.pop("selfLink", None)
            if rt.status:
                if "status" in old:
                    result["status"] = jcopy(old["status"])
                else:
                    result.pop("status", None)
            if rt.kind == "Pod":
                pod_defaults(result, status=False)
            causes = []
            self._validate_meta(rt, result, causes)
            self._validate_kind(rt, result, causes, old=old)
            if omd.get("deletionTimestamp"):
                added = set(rmd.get("finalizers") or []) - set(omd.get("finalizers") or [])
                if added:
                    causes.append(("FieldValueForbidden", "metadata.finalizers",
                                   "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers %s"
                                   % json.dumps(sorted(added))))
            if causes:
                raise err_invalid(rt, name, causes)
            result = self._prune(rt, result, strict)
            if rt.kind == "Namespace":
                rmd = result["metadata"]
                rmd.setdefault("labels", {})["kubernetes.io/metadata.name"] = name
        rmd = result["metadata"]
        if rt.generation and subresource != "status":
            def body_of(o):
                return {k: v for k, v in o.items()
                        if k not in ("metadata", "apiVersion", "kind") and not (rt.status and k == "status")}
            if body_of(result) != body_of(old):
                rmd["generation"] = int(omd.get("generation") or 0) + 1
        rmd["resourceVersion"] = omd.get("resourceVersion")
        rmd["managedFields"] = omd.get("managedFields")
        if rmd["managedFields"] is None:
            rmd.pop("managedFields")
        if _strip_volatile(result) == _strip_volatile(old):
            return existing        # no-op: no new resourceVersion, no event (like etcd)
        mf = self._managed(omd.get("managedFields"), ctx, operation, subresource,
                           fs_source if isinstance(fs_source, dict) else {}, rt,
                           subresource == "status" or not rt.status)
        if mf:
            rmd["managedFields"] = mf
        entry = self._commit(rt, key, result, existing, "MODIFIED", ctx)
        if rt.kind == "CustomResourceDefinition" and not ctx.dry:
            try:
                self.store.add_type(type_from_crd(entry.obj))
            except Exception:
                pass
        emd = entry.obj["metadata"]
        if (emd.get("deletionTimestamp") and not emd.get("finalizers")
                and not (emd.get("deletionGracePeriodSeconds") or 0)):
            entry = self._delete_now(rt, key, entry, ctx)
        return entry

    # ---- patch ----
    def patch(self, rt, ns, name, ctype, raw, ctx, subresource=None, strict=False):
        ctype = (ctype or "").split(";")[0].strip().lower()
        kinds = {"application/merge-patch+json": "merge", "application/json-patch+json": "json",
                 "application/strategic-merge-patch+json": "strategic",
                 "application/apply-patch+yaml": "apply", "application/apply-patch+json": "apply"}
        kind = kinds.get(ctype)
        if kind is None or (kind == "strategic" and not rt.builtin):
            raise ApiError(415, "UnsupportedMediaType",
                           "the body of the request was in an unknown format - accepted media types "
                           "include: application/json-patch+json, application/merge-patch+json, "
                           "application/apply-patch+yaml", {})
        try:
            patch = json.loads(raw.decode() or "null")
        except ValueError as e:
            if kind == "apply":
                raise err_bad_request("fake apiserver: apply patches must be sent as JSON (%s)" % e)
            raise err_bad_request("error decoding patch: %s" % e)
        if kind in ("merge", "strategic", "apply") and not isinstance(patch, dict):
            raise err_bad_request("json: cannot unmarshal %s into Go value of type map[string]interface {}"
                                  % _jtype(patch))
        if kind == "apply" and not ctx.manager_explicit:
            raise err_bad_request("PATCH, application/apply-patch+yaml requires fieldManager parameter")
        with self.store.lock:
            key = (ns if rt.namespaced else "", name)
            existing = self.store.objs[rt.key].get(key)
            if existing is None:
                if kind == "apply" and subresource is None:
                    obj = dict(patch)
                    obj.setdefault("metadata", {})
                    if obj["metadata"].get("name") not in (None, name):
                        raise err_bad_request("the name of the object (%s) does not match the name on the URL (%s)"
                                              % (obj["metadata"].get("name"), name))
                    obj["metadata"]["name"] = name
                    return self.create(rt, ns, obj, ctx, strict=strict), 201
                raise err_not_found(rt, name)
            cur = jcopy(existing.obj)
            try:
                if kind == "json":
                    patched = json_patch(cur, patch)
                elif kind == "strategic":
                    patched = strategic_merge_patch(cur, patch)
                else:
                    patched = merge_patch(cur, patch)
            except PatchTestFailed as e:
                raise ApiError(422, "Invalid", "the server rejected our request due to an error in our request: %s" % e, {})
            except ValueError as e:
                raise ApiError(422, "Invalid", "the server rejected our request due to an error in our request: %s" % e, {})
            if not isinstance(patched, dict):
                raise err_bad_request("the patched object is not a JSON object")
            pmd = patched.get("metadata")
            if not isinstance(pmd, dict):
                patched["metadata"] = pmd = {}
            if pmd.get("name") != name:
                raise err_invalid(rt, name, [("FieldValueInvalid", "metadata.name",
                                              'Invalid value: "%s": field is immutable' % pmd.get("name"))])
            if pmd.get("resourceVersion") in (None, ""):
                pmd["resourceVersion"] = existing.obj["metadata"].get("resourceVersion")
            patched["apiVersion"] = rt.api_version
            patched["kind"] = rt.kind
            op = "Apply" if kind == "apply" else "Update"
            src = patch if isinstance(patch, dict) else _strip_volatile(patched)
            return self._update_core(rt, key, existing, patched, ctx, subresource, op, src,
                                     strict=strict).obj, 200

    # ---- delete ----
    def delete(self, rt, ns, name, opts, ctx):
        with self.store.lock:
            key = (ns if rt.namespaced else "", name)
            existing = self.store.objs[rt.key].get(key)
            if existing is None:
                raise err_not_found(rt, name)
            return self._delete_locked(rt, key, existing, opts, ctx)

    def _delete_locked(self, rt, key, existing, opts, ctx):
        name = key[1]
        old = existing.obj
        omd = old["metadata"]
        pre = opts.get("preconditions") or {}
        by_kind = not rt.builtin
        if pre.get("uid") and pre["uid"] != omd.get("uid"):
            raise err_conflict(rt, name, "the UID in the precondition (%s) does not match the UID "
                               "in record (%s). The object might have been deleted and then "
                               "recreated" % (pre["uid"], omd.get("uid")), by_kind=by_kind)
        if pre.get("resourceVersion") and str(pre["resourceVersion"]) != omd.get("resourceVersion"):
            raise err_conflict(rt, name, "the ResourceVersion in the precondition (%s) does not "
                               "match the ResourceVersion in record (%s). The object might have "
                               "been modified" % (pre["resourceVersion"], omd.get("resourceVersion")),
                               by_kind=by_kind)
        finalizers = omd.get("finalizers") or []
        if rt.kind == "Namespace" and not ctx.dry:
            for trt in list(self.store.types.values()):
                if not trt.namespaced:
                    continue
                for k, e in list(self.store.objs[trt.key].items()):
                    if k[0] == name:
                        self._delete_now(trt, k, e, ctx)
        if rt.graceful:
            grace = opts.get("gracePeriodSeconds")
            if grace is None:
                grace = (old.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
            try:
                grace = int(grace)
            except (TypeError, ValueError):
                grace = 30
            if grace < 0:
                grace = 1
            if (not (old.get("spec") or {}).get("nodeName")
                    or (old.get("status") or {}).get("phase") in ("Succeeded", "Failed")):
                grace = 0
            if omd.get("deletionTimestamp") is not None:
                if grace >= int(omd.get("deletionGracePeriodSeconds") or 0):
                    return 200, old       # graceful deletion already pending
            obj = jcopy(old)
            obj["metadata"]["deletionTimestamp"] = rfc3339(now_ts() + grace)
            obj["metadata"]["deletionGracePeriodSeconds"] = grace
            entry = self._commit(rt, key, obj, existing, "MODIFIED", ctx)
            if grace == 0 and not finalizers:
                entry = self._delete_now(rt, key, entry, ctx)
                return 200, entry.obj
            if grace > 0 and not ctx.dry:
                self.kubelet.schedule(key[0], name, omd.get("uid"), grace)
            return 200, entry.obj
        if finalizers:
            if omd.get("deletionTimestamp") is not None:
                return 200, old
            obj = jcopy(old)
            obj["metadata"]["deletionTimestamp"] = rfc3339(now_ts())
            obj["metadata"]["deletionGracePeriodSeconds"] = 0
            entry = self._commit(rt, key, obj, existing, "MODIFIED", ctx)
            return 200, entry.obj
        entry = self._delete_now(rt, key, existing, ctx)
        if rt.return_deleted:
            return 200, entry.obj
        return 200, status_body(200, None, None, dict(_details(rt, name), uid=omd.get("uid")),
                                success=True)

    def _delete_now(self, rt, key, existing, ctx):
        obj = jcopy(existing.obj)
        entry = self._commit(rt, key, obj, existing, "DELETED", ctx)
        if rt.kind == "CustomResourceDefinition" and not ctx.dry:
            spec = existing.obj.get("spec") or {}
            self.store.remove_type((spec.get("group"), (spec.get("names") or {}).get("plural")))
        return entry

    def kubelet_finish(self, ns, name, uid):
        """What the kubelet does once a pod's containers are gone: delete with grace 0."""
        rt = self.store.types[("", "pods")]
        ctx = Ctx(user="system:node", manager="kubelet")
        with self.store.lock:
            e = self.store.objs[rt.key].get((ns, name))
            if e is None or e.obj["metadata"].get("uid") != uid:
                return
            if not e.obj["metadata"].get("deletionTimestamp"):
                return
            if int(e.obj["metadata"].get("deletionGracePeriodSeconds") or 0) == 0:
                return
            self._delete_locked(rt, (ns, name), e, {"gracePeriodSeconds": 0}, ctx)

    def deletecollection(self, rt, ns, params, opts, ctx):
        ls = LabelSelector(params.get("labelSelector"))
        fs = FieldSelector(params.get("fieldSelector"), rt)
        out = []
        with self.store.lock:
            for key, e in sorted(self.store.objs[rt.key].items()):
                if rt.namespaced and ns and key[0] != ns:
                    continue
                if not ls.matches((e.obj.get("metadata") or {}).get("labels")):
                    continue
                if not fs.matches(rt.fields_of(e.obj)):
                    continue
                _, o = self._delete_locked(rt, key, e, opts, ctx)
                out.append(e.obj if o.get("kind") == "Status" else o)
            return self._list_body(rt, out, str(self.store.rv), None, None)

    def bind(self, ns, name, body, ctx):
        rt = self.store.types[("", "pods")]
        target = (body or {}).get("target") or {}
        node = target.get("name")
        if not node:
            raise err_invalid(rt, name, [("FieldValueRequired", "target.name", "Required value")])
        with self.store.lock:
            key = (ns, name)
            e = self.store.objs[rt.key].get(key)
            if e is None:
                raise err_not_found(rt, name)
            md = e.obj["metadata"]
            bmd = (body or {}).get("metadata") or {}
            if bmd.get("uid") and bmd["uid"] != md.get("uid"):
                raise ApiError(409, "Conflict", 'Operation cannot be fulfilled on pods/binding "%s": '
                               "Precondition failed: UID in precondition: %s, UID in object meta: %s"
                               % (name, bmd["uid"], md.get("uid")),
                               {"name": name, "kind": "pods/binding"})
            if md.get("deletionTimestamp"):
                raise ApiError(409, "Conflict", 'Operation cannot be fulfilled on pods/binding "%s": '
                               "pod %s is being deleted, cannot be assigned to a host" % (name, name),
                               {"name": name, "kind": "pods/binding"})
            if (e.obj.get("spec") or {}).get("nodeName"):
                raise ApiError(409, "Conflict", 'Operation cannot be fulfilled on pods/binding "%s": '
                               'pod %s is already assigned to node "%s"'
                               % (name, name, e.obj["spec"]["nodeName"]),
                               {"name": name, "kind": "pods/binding"})
            obj = jcopy(e.obj)
            obj["spec"]["nodeName"] = node
            st = obj.setdefault("status", {})
            conds = [c for c in st.get("conditions") or [] if c.get("type") != "PodScheduled"]
            conds.append({"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                          "lastTransitionTime": rfc3339(now_ts())})
            st["conditions"] = conds
            self._commit(rt, key, obj, e, "MODIFIED", ctx)
        return status_body(201, None, None, success=True)

    # ---- list ----
    def _list_body(self, rt, items, rv, cont, remaining):
        if rt.builtin:
            md = {"resourceVersion": rv}
            if cont:
                md["continue"] = cont
                if remaining is not None:
                    md["remainingItemCount"] = remaining
            return {"kind": rt.kind + "List", "apiVersion": rt.api_version, "metadata": md,
                    "items": items}
        md = {"continue": cont or "", "resourceVersion": rv}
        if cont and remaining is not None:
            md["remainingItemCount"] = remaining
        return {"apiVersion": rt.api_version, "items": items, "kind": rt.kind + "List",
                "metadata": md}

    def _wait_rv(self, n, timeout=3.0):
        """Caller holds the lock; waits (bounded) until the store reaches resourceVersion n."""
        deadline = time.monotonic() + timeout
        while self.store.rv < n and not self.store.stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                raise err_too_large_rv(n, self.store.rv)
            self.store.any_change.wait(left)

    def list(self, rt, ns, params, table=None):
        ls = LabelSelector(params.get("labelSelector"))
        fs = FieldSelector(params.get("fieldSelector"), rt)
        try:
            limit = int(params.get("limit") or 0)
        except ValueError:
            raise err_bad_request("limit: Invalid value: must be an integer")
        cont = params.get("continue") or ""
        rvp = params.get("resourceVersion")
        match = params.get("resourceVersionMatch") or ""
        if cont and rvp not in (None, ""):
            raise err_bad_request("specifying resource version is not allowed when using continue")
        if match and rvp in (None, ""):
            raise err_bad_request("resourceVersionMatch is forbidden unless resourceVersion is provided")
        if match not in ("", "Exact", "NotOlderThan"):
            raise err_bad_request('resourceVersionMatch: Unsupported value: "%s": supported values: '
                                  '"Exact", "NotOlderThan"' % match)
        st = self.store
        with st.lock:
            log = st.logs[rt.key]
            start_key = None
            if cont:
                crv, start = decode_continue(cont)
                start_key = _key_from_start(start)
                if crv < st.rv and crv < log.start_rv:
                    raise ApiError(410, "Expired",
                                   "The provided continue parameter is too old to display a "
                                   "consistent list result. You can start a new list without the "
                                   "continue parameter, or use the continue value from the response.")
                state = st.snapshot_at(rt, crv) if crv < st.rv else st.objs[rt.key]
                list_rv = crv
            elif rvp not in (None, ""):
                try:
                    n = int(rvp)
                except ValueError:
                    raise err_bad_request('resourceVersion: Invalid value: "%s": must be an integer' % rvp)
                if n > st.rv:
                    self._wait_rv(n)
                if match == "Exact" and n < st.rv:
                    if n < log.start_rv:
                        raise err_expired("The resourceVersion for the provided list is too old.")
                    state = st.snapshot_at(rt, n)
                    list_rv = n
                elif rvp == "0" and not match:
                    # served from the watch cache, which ignores limit and may lag
                    list_rv, state = st.cache_view(rt)
                    limit = 0
                else:
                    state = st.objs[rt.key]
                    list_rv = st.rv
            else:
                state = st.objs[rt.key]
                list_rv = st.rv
            keys = sorted(state)
            if start_key is not None:
                keys = keys[bisect.bisect_right(keys, start_key):]
            if rt.namespaced and ns:
                keys = [k for k in keys if k[0] == ns]
            items, next_cont, remaining = [], None, None
            for i, k in enumerate(keys):
                o = state[k].obj
                if not ls.matches((o.get("metadata") or {}).get("labels")) or not fs.matches(rt.fields_of(o)):
                    continue
                if limit and len(items) >= limit:
                    next_cont = encode_continue(list_rv, items_keys_last)
                    if ls.empty() and fs.empty():
                        remaining = len(keys) - i
                    break
                items.append(state[k])
                items_keys_last = k
        if table is not None:
            md = {"resourceVersion": str(list_rv)}
            if next_cont:
                md["continue"] = next_cont
                if remaining is not None:
                    md["remainingItemCount"] = remaining
            return make_table(rt, [e.obj for e in items], md, table)
        return self._list_body(rt, [e.obj for e in items], str(list_rv), next_cont, remaining)

    # ---- discovery ----
    def discovery_resources(self, group, version):
        res = []
        with self.store.lock:
            types = sorted((rt for rt in self.store.types.values()
                            if rt.group == group and rt.version == version), key=lambda r: r.plural)
        for rt in types:
            r = {"name": rt.plural, "singularName": rt.singular, "namespaced": rt.namespaced,
                 "kind": rt.kind, "verbs": rt.verbs()}
            if rt.short_names:
                r["shortNames"] = rt.short_names
            if rt.categories:
                r["categories"] = rt.categories
            r["storageVersionHash"] = base64.b64encode(rt.key_str.encode()[:8]).decode()
            res.append(r)
            for sub in rt.subresources:
                if sub == "status":
                    res.append({"name": rt.plural + "/status", "singularName": "",
                                "namespaced": rt.namespaced, "kind": rt.kind,
                                "verbs": ["get", "patch", "update"]})
                elif sub == "binding":
                    res.append({"name": rt.plural + "/binding", "singularName": "",
                                "namespaced": rt.namespaced, "kind": "Binding",
                                "verbs": ["create"]})
        return res

    def groups(self):
        with self.store.lock:
            gv = {}
            for rt in self.store.types.values():
                if rt.group:
                    gv.setdefault(rt.group, set()).add(rt.version)
        out = []
        for g in sorted(gv):
            vs = sorted(gv[g])
            versions = [{"groupVersion": "%s/%s" % (g, v), "version": v} for v in vs]
            out.append({"name": g, "versions": versions, "preferredVersion": versions[0]})
        return out

    def openapi_types(self):
        """(group, version, kind, schema) of every type, for /openapi/v2."""
        with self.store.lock:
            return [(rt.group, rt.version, rt.kind, rt.schema) for rt in self.store.types.values()]

    # ---- OpenAPI v3 (enough for kubectl's field-validation probe and `kubectl explain`) ----
    def openapi_v3_root(self):
        paths = {"api/v1": {"serverRelativeURL": "/openapi/v3/api/v1?hash=%s" % self._oa_hash("")}}
        for g in self.groups():
            for v in g["versions"]:
                p = "apis/" + v["groupVersion"]
                paths[p] = {"serverRelativeURL": "/openapi/v3/%s?hash=%s" % (p, self._oa_hash(g["name"]))}
        return {"paths": paths}

    def _oa_hash(self, group):
        with self.store.lock:
            s = json.dumps(sorted((rt.key_str, rt.version, rt.crd_name or "",
                                   json.dumps(rt.schema, sort_keys=True) if rt.schema else "")
                                  for rt in self.store.types.values() if rt.group == group))
        import hashlib
        return hashlib.sha512(s.encode()).hexdigest()[:64].upper()

    def openapi_v3_gv(self, group, version):
        with self.store.lock:
            types = [rt for rt in self.store.types.values() if rt.group == group and rt.version == version]
        if not types:
            return None
        paths, schemas = {}, {}
        fv = {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": True},
              "description": "fieldValidation instructs the server on how to handle objects in the "
                             "request containing unknown or duplicate fields."}
        fm = {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": True}}
        dr = {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": True}}
        for rt in types:
            gvk = {"group": group, "version": version, "kind": rt.kind}
            sname = "%s.%s.%s" % (".".join(reversed(group.split("."))) if group else "io.k8s.api.core",
                                  version, rt.kind)
            sch = dict(rt.schema) if rt.schema else {"type": "object",
                                                     "x-kubernetes-preserve-unknown-fields": True}
            sch["x-kubernetes-group-version-kind"] = [gvk]
            schemas[sname] = sch
            ref = {"$ref": "#/components/schemas/" + sname}
            resp = {"200": {"description": "OK", "content": {"application/json": {"schema": ref}}}}
            base = rt.gv_path + ("/namespaces/{namespace}/" if rt.namespaced else "/") + rt.plural

            def op(verb, params, action):
                return {"operationId": verb + rt.kind, "parameters": params, "responses": resp,
                        "x-kubernetes-action": action, "x-kubernetes-group-version-kind": gvk}
            nsp = [{"name": "namespace", "in": "path", "required": True,
                    "schema": {"type": "string"}}] if rt.namespaced else []
            paths[base] = {"get": op("list", nsp, "list"), "post": op("create", nsp + [fv, fm, dr], "post"),
                           "delete": op("deletecollection", nsp, "deletecollection")}
            item = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
            paths[base + "/{name}"] = {"get": op("read", nsp + item, "get"),
                                       "put": op("replace", nsp + item + [fv, fm, dr], "put"),
                                       "patch": op("patch", nsp + item + [fv, fm, dr], "patch"),
                                       "delete": op("delete", nsp + item + [dr], "delete")}
            if rt.status:
                paths[base + "/{name}/status"] = {
                    "get": op("read", nsp + item, "get"),
                    "put": op("replace", nsp + item + [fv, fm, dr], "put"),
                    "patch": op("patch", nsp + item + [fv, fm, dr], "patch")}
        return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": SERVER_VERSION["gitVersion"]},
                "paths": paths, "components": {"schemas": schemas}}

    # ---- watch ----
    def _bookmark_obj(self, rt, rv):
        if rt.builtin:
            o = {"kind": rt.kind, "apiVersion": rt.api_version,
                 "metadata": {"resourceVersion": str(rv), "creationTimestamp": None}}
            if rt.kind == "Pod":
                o["spec"] = {"containers": None}
                o["status"] = {}
            return o
        return {"apiVersion": rt.api_version, "kind": rt.kind,
                "metadata": {"resourceVersion": str(rv)}}

    def watch(self, h, rt, ns, params, table_mode):
        ls = LabelSelector(params.get("labelSelector"))
        fs = FieldSelector(params.get("fieldSelector"), rt)
        rvp = params.get("resourceVersion")
        bookmarks = params.get("allowWatchBookmarks") in ("true", "1", "True")
        try:
            timeout = float(params["timeoutSeconds"]) if params.get("timeoutSeconds") else self.args.watch_timeout
        except ValueError:
            raise err_bad_request("timeoutSeconds: Invalid value: must be an integer")
        st = self.store
        expired = None

        def match(e):
            md = e.obj.get("metadata") or {}
            if rt.namespaced and ns and md.get("namespace") != ns:
                return False
            return ls.matches(md.get("labels")) and (fs.empty() or fs.matches(e.fields(rt)))

        def wants(ev):   # convert() below gives a line for it
            return match(ev.entry) or (ev.type == "MODIFIED" and ev.prev is not None and match(ev.prev))

        w = None
        with st.lock:
            log = st.logs[rt.key]
            gen = st.watch_gen
            if rvp in (None, "", "0"):
                if rvp == "0":   # from the watch cache, which may lag (Timing)
                    last, table = st.cache_view(rt)
                else:
                    last, table = st.rv, st.objs[rt.key]
                initial = [table[k] for k in sorted(table)]
            else:
                try:
                    last = int(rvp)
                except ValueError:
                    raise err_bad_request('resourceVersion: Invalid value: "%s": must be an integer' % rvp)
                initial = []
                if last < log.start_rv:
                    expired = "too old resource version: %d (%d)" % (last, log.start_rv)
            if not expired:
                w = Waiter(st.lock, wants, last, rt.plural)
                for ev in log.since(last):
                    w.offer(ev, self.timing)
                st.waiters.setdefault(rt.key, set()).add(w)
            self.active_watches += 1

        def line(typ, o=None, raw=None):
            if table_mode is not None and typ in ("ADDED", "MODIFIED", "DELETED"):
                raw = dumps(make_table(rt, [o], {"resourceVersion": o["metadata"].get("resourceVersion", "")},
                                       table_mode))
            elif raw is None:
                raw = dumps(o)
            return b'{"type":"' + typ.encode() + b'","object":' + raw + b"}\n"

        def convert(ev):
            new = ev.entry.obj
            if ev.type == "ADDED":
                return line("ADDED", new, ev.entry.json()) if match(ev.entry) else None
            if ev.type == "DELETED":
                return line("DELETED", new, ev.entry.json()) if match(ev.entry) else None
            nm = match(ev.entry)
            om = ev.prev is not None and match(ev.prev)
            if nm and om:
                return line("MODIFIED", new, ev.entry.json())
            if nm:
                return line("ADDED", new, ev.entry.json())
            if om:
                gone = dict(ev.prev.obj)
                gone["metadata"] = dict(gone["metadata"], resourceVersion=str(ev.rv))
                return line("DELETED", gone)
            return None

        try:
            h.begin_chunked()
            if expired:
                h.chunk(line("ERROR", status_body(410, "Expired", expired)))
                h.end_chunked()
                return
            for e in initial:
                if match(e):
                    h.chunk(line("ADDED", e.obj, e.json()))
            deadline = time.monotonic() + timeout
            next_bm = time.monotonic() + self.bookmark_interval
            while True:
                evs, bm_rv, end = [], None, None
                with st.lock:
                    while True:
                        if st.stopping:
                            end = "clean"
                            break
                        if st.watch_gen != gen:
                            end = st.watch_drop_mode
                            break
                        log = st.logs.get(rt.key)
                        if log is None or st.types.get(rt.key) is not rt:
                            end = "clean"
                            break
                        if w.queued < log.start_rv:
                            end = "expired"
                            break
                        # With --persist, like etcd: a write reaches watchers only once it
                        # is durable. A write that a kill -9 loses was never seen, so no
                        # watcher's resourceVersion can run ahead of the restarted store.
                        durable = self.persister.written_rv if self.persister else None
                        undurable = False
                        now = time.monotonic()
                        pending = w.pending
                        while pending and pending[0][0] <= now:
                            if durable is not None and pending[0][1].rv > durable:
                                undurable = True
                                break
                            evs.append(pending.popleft()[1])
                        if bookmarks and now >= next_bm:
                            # never beyond what this watcher has been sent
                            if pending:
                                bm_rv = pending[0][1].rv - 1
                                if durable is not None:
                                    bm_rv = min(bm_rv, durable)
                            else:   # nothing for this watch between queued and now
                                bm_rv = w.queued = max(w.queued, st.rv if durable is None else min(st.rv, durable))
                        if evs or bm_rv is not None:
                            break
                        if now >= deadline:
                            end = "clean"
                            break
                        wait = deadline - now
                        if bookmarks:
                            wait = min(wait, next_bm - now)
                        if pending:
                            wait = min(wait, pending[0][0] - now)
                        if undurable:   # the persister does not notify watchers: look again soon
                            wait = min(wait, 0.005)
                        w.cond.wait(max(0.001, min(wait, 1.0)))
                if evs:
                    out = [x for x in (convert(ev) for ev in evs) if x is not None]
                    last = evs[-1].rv
                    if out:
                        h.chunks(out)
                if bm_rv is not None:
                    h.chunk(line("BOOKMARK", raw=dumps(self._bookmark_obj(rt, bm_rv))))
                    last = max(last, bm_rv)
                    next_bm = time.monotonic() + self.bookmark_interval
                if end == "expired":
                    h.chunk(line("ERROR", status_body(410, "Expired", "too old resource version: %d (%d)"
                                                      % (last, st.logs[rt.key].start_rv))))
                    end = "clean"
                if end == "abort":
                    h.abort()
                    return
                if end:
                    break
            h.end_chunked()
        finally:
            with st.lock:
                self.active_watches -= 1
                if w is not None:
                    st.waiters.get(rt.key, set()).discard(w)


# ----------------------------------------------------------------------------------------
# Test control: faults, RBAC rules, request log, tokens
# ----------------------------------------------------------------------------------------


class Policy:
    def __init__(self):
        self.lock = threading.Lock()
        self.faults = []
        self.fault_seq = 0
        self.deny = []
        self.allow = None
        self.log = []
        self.log_seq = 0
        self.log_max = 200000
        self.tokens = {}

    # faults
    def add_fault(self, f):
        with self.lock:
            self.fault_seq += 1
            rule = {"id": self.fault_seq, "method": (f.get("method") or "*").upper(),
                    "path_prefix": f.get("path_prefix") or f.get("path") or "/",
                    "query_contains": f.get("query_contains") or "",
                    "count": int(f.get("count", 1)), "action": f.get("action") or "error",
                    "status": int(f.get("status", 429 if f.get("action") == "throttle" else 500)),
                    "retry_after": int(f.get("retry_after", 1)),
                    "delay_ms": float(f.get("delay_ms", 1000)),
                    "message": f.get("message") or "injected fault", "hits": 0}
            if rule["action"] not in ("error", "throttle", "delay", "hang", "close", "reset"):
                raise err_bad_request("unknown fault action %r" % rule["action"])
            self.faults.append(rule)
            return rule

    def take_fault(self, method, path, query):
        with self.lock:
            for r in self.faults:
                if r["count"] == 0:
                    continue
                if r["method"] not in ("*", method):
                    continue
                if not path.startswith(r["path_prefix"]):
                    continue
                if r["query_contains"] and r["query_contains"] not in query:
                    continue
                if r["count"] > 0:
                    r["count"] -= 1
                r["hits"] += 1
                return dict(r)
        return None

    # RBAC
    @staticmethod
    def _norm(rule):
        def lst(*keys):
            for k in keys:
                if k in rule:
                    v = rule[k]
                    return [v] if isinstance(v, str) else list(v)
            return None
        return {"verbs": lst("verbs", "verb") or ["*"], "apiGroups": lst("apiGroups", "group") or ["*"],
                "resources": lst("resources", "resource") or ["*"],
                "resourceNames": lst("resourceNames", "name") or [],
                "namespaces": lst("namespaces", "namespace") or [],
                "users": lst("users", "user") or []}

    @staticmethod
    def _match(r, user, verb, group, resource, ns, name):
        if "*" not in r["verbs"] and verb not in r["verbs"]:
            return False
        if "*" not in r["apiGroups"] and group not in r["apiGroups"]:
            return False
        base = resource.split("/")[0]
        if not any(x == "*" or x == resource or (x.endswith("/*") and x[:-2] == base)
                   or (x.startswith("*/") and "/" in resource and x[2:] == resource.split("/", 1)[1])
                   for x in r["resources"]):
            return False
        if r["resourceNames"] and name not in r["resourceNames"]:
            return False
        if r["namespaces"] and ns not in r["namespaces"]:
            return False
        if r["users"] and user not in r["users"]:
            return False
        return True

    def allowed(self, user, verb, group, resource, ns, name):
        with self.lock:
            for r in self.deny:
                if self._match(r, user, verb, group, resource, ns, name):
                    return False
            if self.allow is not None:
                return any(self._match(r, user, verb, group, resource, ns, name) for r in self.allow)
            return True

    def record(self, entry):
        with self.lock:
            self.log_seq += 1
            entry["seq"] = self.log_seq
            self.log.append(entry)
            if len(self.log) > self.log_max:
                del self.log[:len(self.log) - self.log_max]


def forbidden(user, verb, group, resource, ns, name):
    base = resource.split("/")[0]
    qual = base + ("." + group if group else "")
    prefix = '%s "%s"' % (qual, name) if name else qual
    scope = 'in the namespace "%s"' % ns if ns else "at the cluster scope"
    msg = '%s is forbidden: User "%s" cannot %s resource "%s" in API group "%s" %s' % (
        prefix, user, verb, resource, group, scope)
    det = {}
    if name:
        det["name"] = name
    if group:
        det["group"] = group
    det["kind"] = base
    return ApiError(403, "Forbidden", msg, det, headers={"X-Content-Type-Options": "nosniff"})


# ----------------------------------------------------------------------------------------
# Realistic timing (issue 11): watch delivery delay, serialized write latency, random
# 429 (API Priority and Fairness) and 500 answers.  Off unless configured: by CLI flags,
# by FAKEAPI_* environment variables read at start, or at run time by /_fake/timing.
# ----------------------------------------------------------------------------------------

# FAKEAPI_TIMING=realistic.  Reasons for each number: docs/fake-apiserver.md ("Timing").
TIMING_PRESETS = {
    "off": {},
    "realistic": {
        "watch_delay_ms": {"*": (2, 100), "pods": (5, 250)},
        "write_latency_ms": (2, 8),
        "throttle_rate": 0.01,
        "throttle_retry_after": 1,
        "error_rate": 0.002,
        "error_write_phase": "random",
    },
}

TIMING_ENV = {
    "watch_delay_ms": "FAKEAPI_WATCH_DELAY_MS",
    "write_latency_ms": "FAKEAPI_WRITE_LATENCY_MS",
    "throttle_rate": "FAKEAPI_THROTTLE_RATE",
    "throttle_retry_after": "FAKEAPI_THROTTLE_RETRY_AFTER",
    "error_rate": "FAKEAPI_ERROR_RATE",
    "error_write_phase": "FAKEAPI_ERROR_WRITE_PHASE",
    "seed": "FAKEAPI_TIMING_SEED",
    "exempt_user_agents": "FAKEAPI_EXEMPT_USER_AGENTS",
}

# The tests' own client (fakeapi_client.py) plays the kubelet, the scheduler and users,
# which retry on their own: random 429/500 would fail a test's setup, not the daemon.
DEFAULT_EXEMPT_USER_AGENTS = ("fakeapi-test/",)

ERROR_WRITE_PHASES = ("before", "after", "random")
MAX_TIMING_MS = 10000.0


def parse_range_ms(v, what):
    """A delay range in ms: "2-5", "3", 3, [2, 5] or {"min": 2, "max": 5} -> (lo, hi)."""
    try:
        if isinstance(v, dict):
            lo, hi = float(v["min"]), float(v["max"])
        elif isinstance(v, (list, tuple)):
            if len(v) != 2:
                raise ValueError("two numbers")
            lo, hi = float(v[0]), float(v[1])
        elif isinstance(v, (int, float)):
            lo = hi = float(v)
        else:
            text = str(v).strip()
            lo_s, sep, hi_s = text.partition("-")
            lo = float(lo_s)
            hi = float(hi_s) if sep else lo
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError("%s: %r is not a range in ms like 2-5 (%s)" % (what, v, e))
    if not (0 <= lo <= hi <= MAX_TIMING_MS):
        raise ValueError("%s: %r: need 0 <= min <= max <= %d ms" % (what, v, MAX_TIMING_MS))
    return (lo, hi)


def parse_watch_delay(v):
    """Per-resource watch delays: "pods=100-500,ipblocks=0-200,*=0-50" or a JSON object
    {"pods": "100-500", "*": [0, 50]}.  A bare range ("0-50") applies to every resource."""
    if v is None or v == "" or v == {}:
        return {}
    if isinstance(v, dict):
        items = list(v.items())
    elif isinstance(v, str) and "=" in v:
        items = []
        for part in v.split(","):
            if not part.strip():
                continue
            k, sep, r = part.partition("=")
            if not sep:
                raise ValueError("watch delay: %r is not RESOURCE=MIN-MAX" % part)
            items.append((k.strip(), r))
    else:
        items = [("*", v)]
    out = {}
    for k, r in items:
        if not k:
            raise ValueError("watch delay: empty resource name")
        out[k] = parse_range_ms(r, "watch delay of %s" % k)
    return out


def parse_rate(v, what):
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise ValueError("%s: %r is not a number" % (what, v))
    if not 0.0 <= x <= 1.0:
        raise ValueError("%s: %r must be between 0 and 1" % (what, v))
    return x


class Timing:
    """The timing model.  Thread-safe; every draw comes from one seeded random.Random,
    so a seed fixes the sequence of draws (which request gets which draw still depends
    on the order requests arrive)."""

    def __init__(self):
        self.lock = threading.Lock()
        # Writes commit one after another, as in etcd: each takes the next slot of one
        # commit timeline (commit_free_at), then applies in slot order (tickets).
        self.commit_cv = threading.Condition()
        self.commit_free_at = 0.0
        self.next_ticket = 0
        self.apply_ticket = 0
        self.seed = None
        self.rng = random.Random()
        self.reset()

    def reset(self):
        with self.lock:
            self.watch_delay_ms = {}
            self.write_latency_ms = (0.0, 0.0)
            self.throttle_rate = 0.0
            self.throttle_retry_after = 1
            self.error_rate = 0.0
            self.error_write_phase = "before"
            self.exempt_user_agents = DEFAULT_EXEMPT_USER_AGENTS
            self.counts = {"throttled": 0, "errors_before": 0, "errors_after": 0, "errors_read": 0,
                           "writes": 0}

    def set_seed(self, seed):
        with self.lock:
            self.seed = int(seed) if seed not in (None, "") else random.SystemRandom().randrange(1, 2 ** 31)
            self.rng = random.Random(self.seed)

    def configure(self, body):
        """Applies the keys present in `body` (the control API's JSON, or settings from the
        command line and environment).  Validates everything before changing anything."""
        if not isinstance(body, dict):
            raise ValueError("timing: expected a JSON object")
        unknown = set(body) - set(TIMING_ENV) - {"preset"}
        if unknown:
            raise ValueError("timing: unknown keys %s (known: preset, %s)"
                             % (sorted(unknown), ", ".join(sorted(TIMING_ENV))))
        new = {}
        if body.get("preset") not in (None, ""):
            if body["preset"] not in TIMING_PRESETS:
                raise ValueError("timing: unknown preset %r (known: %s)"
                                 % (body["preset"], ", ".join(sorted(TIMING_PRESETS))))
            new.update(TIMING_PRESETS[body["preset"]])
            if body["preset"] == "off":
                new.update(watch_delay_ms={}, write_latency_ms=(0, 0), throttle_rate=0.0,
                           error_rate=0.0, error_write_phase="before")
        for k, v in body.items():
            if k != "preset":
                new[k] = v
        parsed = {}
        for k, v in new.items():
            if k == "watch_delay_ms":
                parsed[k] = parse_watch_delay(v)
            elif k == "write_latency_ms":
                parsed[k] = parse_range_ms(v if v not in (None, "") else 0, "write latency")
            elif k in ("throttle_rate", "error_rate"):
                parsed[k] = parse_rate(v, k)
            elif k == "throttle_retry_after":
                try:
                    parsed[k] = int(v)
                except (TypeError, ValueError):
                    raise ValueError("throttle_retry_after: %r is not a whole number of seconds" % v)
                if parsed[k] < 0:
                    raise ValueError("throttle_retry_after must be >= 0")
            elif k == "error_write_phase":
                if v not in ERROR_WRITE_PHASES:
                    raise ValueError("error_write_phase: %r is not one of %s" % (v, ", ".join(ERROR_WRITE_PHASES)))
                parsed[k] = v
            elif k == "exempt_user_agents":
                if isinstance(v, str):
                    v = [x.strip() for x in v.split(",") if x.strip()]
                if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) for x in v):
                    raise ValueError("exempt_user_agents: a list of User-Agent prefixes")
                parsed[k] = tuple(v)
            elif k == "seed":
                try:
                    parsed[k] = int(v) if v not in (None, "") else None
                except (TypeError, ValueError):
                    raise ValueError("seed: %r is not an integer" % v)
        if "seed" in parsed:
            self.set_seed(parsed.pop("seed"))
        with self.lock:
            for k, v in parsed.items():
                setattr(self, k, v)
        return self.describe()

    def describe(self):
        with self.lock:
            return {"watch_delay_ms": {k: list(v) for k, v in sorted(self.watch_delay_ms.items())},
                    "write_latency_ms": list(self.write_latency_ms),
                    "throttle_rate": self.throttle_rate,
                    "throttle_retry_after": self.throttle_retry_after,
                    "error_rate": self.error_rate,
                    "error_write_phase": self.error_write_phase,
                    "exempt_user_agents": list(self.exempt_user_agents),
                    "seed": self.seed, "counts": dict(self.counts)}

    def _draw(self, rng_range):
        lo, hi = rng_range
        if hi <= 0:
            return 0.0
        with self.lock:
            return self.rng.uniform(lo, hi) / 1000.0

    def watch_delay(self, plural):
        """Seconds one watch event of `plural` waits after its commit (0 when off)."""
        r = self.watch_delay_ms.get(plural) or self.watch_delay_ms.get("*")
        return self._draw(r) if r else 0.0

    def watch_delays_on(self):
        return bool(self.watch_delay_ms)

    def write_latency(self):
        return self._draw(self.write_latency_ms)

    def pick_fault(self, is_write, user_agent=""):
        """None, "throttle", "error_before", "error_after" or "error" (a read) for one
        non-watch API request."""
        with self.lock:
            if self.throttle_rate <= 0 and self.error_rate <= 0:
                return None
            if any(user_agent.startswith(p) for p in self.exempt_user_agents):
                return None
            x = self.rng.random()
            if x < self.throttle_rate:
                self.counts["throttled"] += 1
                return "throttle"
            if x < self.throttle_rate + self.error_rate:
                if not is_write:
                    self.counts["errors_read"] += 1
                    return "error"
                phase = self.error_write_phase
                if phase == "random":
                    phase = "before" if self.rng.random() < 0.5 else "after"
                self.counts["errors_" + phase] += 1
                return "error_" + phase
            return None

    def commit(self, stop_event, enabled=True):
        """A context manager for one write. Writes are serialized, as etcd's raft log is:
        each takes the next slot of one commit timeline, lasting its drawn latency, waits
        until that slot ends, and is then applied, in slot order; so its watch event exists
        only after the latency, and N concurrent writes take at least the sum of theirs.
        The timeline is kept as times, not as a lock held across the wait: a lock would
        add this Python process's thread hand-over (the GIL) to every commit, a cost of the
        fake under load that etcd does not have."""
        timing = self

        class _Commit:
            def __enter__(self):
                d = timing.write_latency() if enabled else 0.0
                self.ticket = None
                if d <= 0:
                    return self
                with timing.commit_cv:
                    start = max(time.monotonic(), timing.commit_free_at)
                    timing.commit_free_at = start + d
                    self.ticket = timing.next_ticket
                    timing.next_ticket += 1
                with timing.lock:
                    timing.counts["writes"] += 1
                stop_event.wait(max(0.0, start + d - time.monotonic()))
                with timing.commit_cv:
                    while timing.apply_ticket < self.ticket and not stop_event.is_set():
                        timing.commit_cv.wait(0.5)
                return self

            def __exit__(self, *exc):
                if self.ticket is not None:
                    with timing.commit_cv:
                        timing.apply_ticket = max(timing.apply_ticket, self.ticket + 1)
                        timing.commit_cv.notify_all()
                return False
        return _Commit()

    def throttle_error(self):
        ra = self.throttle_retry_after
        return ApiError(429, "TooManyRequests", "Too many requests, please try again later.",
                        {"retryAfterSeconds": ra}, headers={"Retry-After": ra})

    @staticmethod
    def internal_error():
        msg = "etcdserver: request timed out"
        return ApiError(500, "InternalError", "Internal error occurred: %s" % msg,
                        {"causes": [{"message": msg}]})


def timing_settings_from(args, environ):
    """The start-up timing: FAKEAPI_TIMING's preset, then FAKEAPI_* variables, then CLI
    flags (each later source wins for the keys it sets)."""
    body = {}
    preset = environ.get("FAKEAPI_TIMING") or ""
    if args.timing:
        preset = args.timing
    if preset:
        body["preset"] = preset
    for k, env in TIMING_ENV.items():
        if environ.get(env) not in (None, ""):
            body[k] = environ[env]
    for k in TIMING_ENV:
        v = getattr(args, "timing_" + k, None)
        if v is not None:
            body[k] = v
    return body


# ----------------------------------------------------------------------------------------
# HTTP
# ----------------------------------------------------------------------------------------


class AbortConnection(Exception):
    pass


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-apiserver"
    sys_version = ""
    timeout = 300

    def log_message(self, fmt, *args):
        if self.server.mgr.api.args.verbose:
            sys.stderr.write("fake-apiserver: %s - %s\n" % (self.address_string(), fmt % args))

    def send_response(self, code, message=None):
        self.log_request(code)
        self.send_response_only(code, message)
        self.send_header("Date", self.date_time_string())
        self._status = code

    for _m in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"):
        exec("def do_%s(self):\n    self._handle(%r)\n" % (_m, _m))
    del _m

    # ---- response helpers ----
    def _pretty(self):
        ua = self.headers.get("User-Agent") or ""
        return self._params.get("pretty") in ("true", "1") or ua.startswith("curl") or ua.startswith("Wget")

    def send_body(self, code, obj, headers=None, pf=True, ctype="application/json"):
        body = obj if isinstance(obj, (bytes, bytearray)) else dumps(obj, self._pretty())
        if isinstance(obj, dict) and not isinstance(obj, (bytes, bytearray)) and self._pretty():
            pass
        self.send_response(code)
        self.send_header("Audit-Id", str(uuid.uuid4()))
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Content-Type", ctype)
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        if pf:
            self.send_header("X-Kubernetes-Pf-Flowschema-Uid", self.server.mgr.pf_uid)
            self.send_header("X-Kubernetes-Pf-Prioritylevel-Uid", self.server.mgr.pl_uid)
        self.send_header("Content-Length", str(len(body)))
        # headers and body leave in one write (no Nagle/delayed-ACK stall between them)
        self._headers_buffer.append(b"\r\n")
        if self.command != "HEAD":
            self._headers_buffer.append(bytes(body))
        self.flush_headers()
        self.wfile.flush()

    def send_error_status(self, e):
        self.send_body(e.code, e.body(), headers=e.headers, pf=e.code != 401)

    def begin_chunked(self):
        self.send_response(200)
        self.send_header("Audit-Id", str(uuid.uuid4()))
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Kubernetes-Pf-Flowschema-Uid", self.server.mgr.pf_uid)
        self.send_header("X-Kubernetes-Pf-Prioritylevel-Uid", self.server.mgr.pl_uid)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        self._chunked = True

    def chunk(self, data):
        self.wfile.write(b"%x\r\n" % len(data) + data + b"\r\n")
        self.wfile.flush()

    def chunks(self, datas):
        self.wfile.write(b"".join(b"%x\r\n" % len(d) + d + b"\r\n" for d in datas))
        self.wfile.flush()

    def end_chunked(self):
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
        self._chunked = False

    def abort(self):
        raise AbortConnection()

    def _read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            parts, total = [], 0
            for _ in range(100000):
                size_line = self.rfile.readline(1024)
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    for _ in range(100):
                        trailer = self.rfile.readline(1024)
                        if trailer in (b"\r\n", b"\n", b""):
                            break
                    break
                total += size
                if total > 3 * 1024 * 1024:
                    raise ApiError(413, "RequestEntityTooLarge", "limit is 3145728", {})
                parts.append(self.rfile.read(size))
                self.rfile.readline(16)
            return b"".join(parts)
        n = int(self.headers.get("Content-Length") or 0)
        if n > 3 * 1024 * 1024:
            self.close_connection = True
            raise ApiError(413, "RequestEntityTooLarge", "limit is 3145728", {})
        return self.rfile.read(n) if n > 0 else b""

    def _json_body(self, raw, rt=None):
        if not raw:
            raise err_bad_request("the body of the request was empty")
        try:
            return json.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            what = (" (must be of type %s)" % rt.kind) if rt else ""
            raise err_bad_request("the object provided is unrecognized%s: couldn't get version/kind; "
                                  "json parse error: %s" % (what, e))

    # ---- the request ----
    def _handle(self, method):
        mgr = self.server.mgr
        api = mgr.api
        t0 = time.monotonic()
        self._status = None
        self._chunked = False
        self._timing_fault = None
        url = urllib.parse.urlsplit(self.path)
        path = url.path
        self._params = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        info = {"verb": "", "group": "", "resource": "", "namespace": "", "name": "", "user": "",
                "fault": None}
        try:
            raw = self._read_body()
            if path.startswith("/_fake/") or path == "/_fake":
                self._control(method, path, raw)
                return
            if self.server.is_control:
                raise err_path_not_found()
            fault = api.policy.take_fault(method, path, url.query)
            if fault:
                info["fault"] = fault["action"]
                if self._apply_fault(fault):
                    return
            user = None
            auth = self.headers.get("Authorization") or ""
            if auth.startswith("Bearer "):
                user = api.policy.tokens.get(auth[7:].strip())
            if user is None and api.args.anonymous:
                user = "system:anonymous"
            if user is None:
                raise ApiError(401, "Unauthorized", "Unauthorized")
            info["user"] = user
            self._timing_fault = self._pick_timing_fault(method, path, info)
            self._route(method, path, raw, user, info)
        except AbortConnection:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        except ApiError as e:
            if self._chunked:
                self.close_connection = True
            else:
                self.send_error_status(e)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, ssl.SSLError,
                socket.timeout):
            self.close_connection = True
        except Exception as e:
            traceback.print_exc()
            if not self._chunked and self._status is None:
                try:
                    self.send_body(500, status_body(500, "InternalError",
                                                    "Internal error occurred: %s" % e,
                                                    {"causes": [{"message": str(e)}]}))
                except OSError:
                    pass
            self.close_connection = True
        finally:
            if not path.startswith("/_fake"):
                api.policy.record({
                    "time": rfc3339(now_ts()), "method": method, "path": self.path,
                    "verb": info["verb"], "group": info["group"], "resource": info["resource"],
                    "namespace": info["namespace"], "name": info["name"], "user": info["user"],
                    "user_agent": self.headers.get("User-Agent") or "",
                    "status": self._status, "fault": info["fault"],
                    "duration_ms": round((time.monotonic() - t0) * 1000, 3),
                    "end_mono": round(time.monotonic(), 6)})

    def _apply_fault(self, f):
        """Returns True if the request was answered (or dropped) by the fault."""
        act = f["action"]
        stop = self.server.mgr.stop_event
        if act in ("delay", "hang"):
            stop.wait(f["delay_ms"] / 1000.0)
            if act == "delay":
                return False
            act = "close"
        if act == "close":
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return True
        if act == "reset":
            self.close_connection = True
            try:
                raw = self.connection
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                raw.close()
            except OSError:
                pass
            return True
        code = f["status"]
        msg = f["message"]
        if act == "throttle" or code == 429:
            e = ApiError(429, "TooManyRequests", "Too many requests, please try again later.",
                         {"retryAfterSeconds": f["retry_after"]},
                         headers={"Retry-After": f["retry_after"]})
        elif code == 500:
            e = ApiError(500, "InternalError", "Internal error occurred: %s" % msg,
                         {"causes": [{"message": msg}]})
        elif code == 503:
            e = ApiError(503, "ServiceUnavailable", msg, {}, headers={"Retry-After": f["retry_after"]})
        elif code == 504:
            e = ApiError(504, "Timeout", msg, {})
        else:
            e = ApiError(code, "", msg)
        self.send_error_status(e)
        return True

    def _pick_timing_fault(self, method, path, info):
        """Timing's random 429/500 for a non-watch request under /api or /apis (after
        authentication, as APF runs after it).  Answers by raising; an "error_after" on a
        write is raised by _route once the write is applied."""
        if not (path.startswith("/api/") or path.startswith("/apis/") or path in ("/api", "/apis")):
            return None
        if self._params.get("watch") in ("1", "true", "True"):
            return None
        fault = self.server.mgr.api.timing.pick_fault(method not in ("GET", "HEAD"),
                                                      self.headers.get("User-Agent") or "")
        if fault:
            info["fault"] = "timing-" + fault   # the request log names it
        if fault == "throttle":
            raise self.server.mgr.api.timing.throttle_error()
        if fault in ("error", "error_before"):
            raise Timing.internal_error()
        return fault

    def _route(self, method, path, raw, user, info):
        api = self.server.mgr.api
        segs = [s for s in path.split("/") if s]
        p = self._params
        if method not in ("GET", "HEAD") and (not segs or segs[0] not in ("api", "apis")):
            raise err_method_not_allowed()
        if path in ("/healthz", "/livez", "/readyz") or (segs and segs[0] in ("healthz", "livez", "readyz")):
            self.send_body(200, b"ok", pf=False, ctype="text/plain; charset=utf-8")
            return
        if path == "/version":
            self.send_body(200, SERVER_VERSION)
            return
        if path in ("/api", "/api/"):
            self.send_body(200, {"kind": "APIVersions", "versions": ["v1"],
                                 "serverAddressByClientCIDRs": [
                                     {"clientCIDR": "0.0.0.0/0",
                                      "serverAddress": "127.0.0.1:%d" % api.port}]})
            return
        if path in ("/apis", "/apis/"):
            self.send_body(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": api.groups()})
            return
        if segs and segs[0] == "openapi":
            if segs[1:] == ["v2"]:
                doc = openapi_v2.document(api.openapi_types(), SERVER_VERSION["gitVersion"])
                if openapi_v2.PROTOBUF in (self.headers.get("Accept") or ""):
                    self.send_body(200, openapi_v2.encode(doc), ctype=openapi_v2.PROTOBUF_REPLY)
                else:
                    self.send_body(200, doc)
                return
            if len(segs) >= 2 and segs[1] == "v3":
                if len(segs) == 2:
                    self.send_body(200, api.openapi_v3_root())
                    return
                rest = segs[2:]
                doc = None
                if rest[:2] == ["api", "v1"] and len(rest) == 2:
                    doc = api.openapi_v3_gv("", "v1")
                elif rest[0] == "apis" and len(rest) == 3:
                    doc = api.openapi_v3_gv(rest[1], rest[2])
                if doc is not None:
                    self.send_body(200, doc)
                    return
            raise err_path_not_found()
        if not segs or segs[0] not in ("api", "apis"):
            raise err_path_not_found()
        if segs[0] == "api":
            if len(segs) < 2 or segs[1] != "v1":
                raise err_path_not_found()
            group, version, rest = "", "v1", segs[2:]
            if not rest:
                self.send_body(200, {"kind": "APIResourceList", "groupVersion": "v1",
                                     "resources": api.discovery_resources("", "v1")})
                return
        else:
            g = next((x for x in api.groups() if len(segs) > 1 and x["name"] == segs[1]), None)
            if len(segs) == 2 and g:
                self.send_body(200, dict({"kind": "APIGroup", "apiVersion": "v1"}, **g))
                return
            if len(segs) < 3 or g is None or not any(v["version"] == segs[2] for v in g["versions"]):
                raise err_path_not_found()
            group, version, rest = segs[1], segs[2], segs[3:]
            if not rest:
                self.send_body(200, {"kind": "APIResourceList", "apiVersion": "v1",
                                     "groupVersion": "%s/%s" % (group, version),
                                     "resources": api.discovery_resources(group, version)})
                return
        ns = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            cand = api.rt_for(group, version, rest[2])
            if cand is not None and cand.namespaced:
                ns = rest[1]
                rest = rest[2:]
        if len(rest) > 3:
            raise err_path_not_found()
        rt = api.rt_for(group, version, rest[0])
        if rt is None:
            raise err_path_not_found()
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub is not None and sub not in rt.subresources:
            raise err_path_not_found()
        if rt.namespaced and ns is None and name is not None:
            raise err_path_not_found()
        if not rt.namespaced and ns is not None:
            raise err_path_not_found()
        watch = p.get("watch") in ("1", "true", "True")
        if method in ("GET", "HEAD"):
            verb = "get" if name else ("watch" if watch else "list")
        elif method == "POST":
            if name is None:
                verb = "create"
            elif sub == "binding":
                verb = "create"
            else:
                raise err_method_not_allowed()
        elif method == "PUT":
            verb = "update"
        elif method == "PATCH":
            verb = "patch"
        elif method == "DELETE":
            verb = "delete" if name else "deletecollection"
        else:
            raise err_method_not_allowed()
        if method in ("PUT", "PATCH") and (name is None or sub == "binding"):
            raise err_method_not_allowed()
        if method == "DELETE" and sub is not None:
            raise err_method_not_allowed()
        resource = rt.plural + ("/" + sub if sub else "")
        info.update(verb=verb, group=group, resource=resource, namespace=ns or "", name=name or "")
        if not api.policy.allowed(user, verb, group, resource, ns or "", name or ""):
            raise forbidden(user, verb, group, resource, ns or "", name or "")
        ctx = Ctx(user=user)
        ua = self.headers.get("User-Agent") or "unknown"
        ctx.manager = p.get("fieldManager") or ua.split("/")[0] or "unknown"
        ctx.manager_explicit = bool(p.get("fieldManager"))
        ctx.dry = p.get("dryRun") == "All"
        strict = p.get("fieldValidation") == "Strict"
        accept = self.headers.get("Accept") or ""
        table = (p.get("includeObject") or "Metadata") if wants_table(accept) else None
        if table not in (None, "Metadata", "Object", "None"):
            table = "Metadata"
        ns_ = ns or ""
        if verb == "get":
            e = api.get(rt, ns_, name)
            if sub == "binding":
                raise err_method_not_allowed()
            if table is not None:
                self.send_body(200, make_table(rt, [e.obj], {"resourceVersion": e.obj["metadata"].get("resourceVersion", "")}, table))
            elif self._pretty():
                self.send_body(200, e.obj)
            else:
                self.send_body(200, e.json())
            return
        if verb == "list":
            self.send_body(200, api.list(rt, ns_, p, table))
            return
        if verb == "watch":
            api.watch(self, rt, ns_, p, table)
            return
        if verb == "update" and not ctx.dry:
            api.check_not_stale(rt, ns_, name, raw)
        with api.timing.commit(self.server.mgr.stop_event, enabled=not ctx.dry):
            code, out = self._write(api, verb, sub, rt, ns_, name, raw, ctx, strict, p)
        if api.persister and ctx.wrote_rv:
            if not api.persister.flush(ctx.wrote_rv):
                raise ApiError(500, "InternalError", "Internal error occurred: persistence is stuck: %s"
                               % api.persister.error, {})
        if getattr(self, "_timing_fault", None) == "error_after":
            raise Timing.internal_error()   # the write is applied; the client cannot know
        self.send_body(code, out)

    def _write(self, api, verb, sub, rt, ns_, name, raw, ctx, strict, p):
        code, out = None, None
        if verb == "create" and sub == "binding":
            body = self._json_body(raw)
            out = api.bind(ns_, name, body, ctx)
            code = 201
        elif verb == "create":
            body = self._json_body(raw, rt)
            out = api.create(rt, ns_, body, ctx, strict=strict)
            code = 201
        elif verb == "update":
            body = self._json_body(raw, rt)
            out = api.update(rt, ns_, name, body, ctx, subresource=sub, strict=strict)
            code = 200
        elif verb == "patch":
            out, code = api.patch(rt, ns_, name, self.headers.get("Content-Type"), raw, ctx,
                                  subresource=sub, strict=strict)
        elif verb in ("delete", "deletecollection"):
            opts = {}
            if raw:
                opts = self._json_body(raw)
                if not isinstance(opts, dict):
                    raise err_bad_request("DeleteOptions must be an object")
            if "gracePeriodSeconds" in p:
                try:
                    opts["gracePeriodSeconds"] = int(p["gracePeriodSeconds"])
                except ValueError:
                    raise err_bad_request("gracePeriodSeconds: Invalid value: must be an integer")
            if p.get("dryRun") == "All" or opts.get("dryRun") == ["All"]:
                ctx.dry = True
            if verb == "delete":
                code, out = api.delete(rt, ns_, name, opts, ctx)
            else:
                code, out = 200, api.deletecollection(rt, ns_, p, opts, ctx)
        return code, out

    # ---- control API ----
    def _control(self, method, path, raw):
        mgr = self.server.mgr
        api = mgr.api
        pol = api.policy
        body = {}
        if raw:
            try:
                body = json.loads(raw.decode())
            except ValueError as e:
                raise err_bad_request("control API: bad JSON: %s" % e)
        route = path[len("/_fake"):].rstrip("/") or "/"
        p = self._params
        st = api.store

        def ok(obj, code=200):
            self.send_body(code, obj, pf=False)

        if route in ("/", "/healthz") and method == "GET":
            return ok({"ok": True})
        if route == "/state" and method == "GET":
            with st.lock:
                return ok({"resourceVersion": st.rv, "startedResourceVersion": st.started_rv,
                           "compactedResourceVersion": st.compact_rv,
                           "watchWindowStart": {st.types[k].key_str: l.start_rv for k, l in st.logs.items()},
                           "activeWatches": api.active_watches, "connections": len(mgr.conns),
                           "unavailable": mgr.unavailable, "bookmarkIntervalSeconds": api.bookmark_interval,
                           "persistError": api.persister.error if api.persister else None,
                           "port": api.port, "controlPort": mgr.control_port})
        if route == "/compact" and method == "POST":
            return ok({"compactedResourceVersion": st.compact()})
        if route == "/drop-watches" and method == "POST":
            mode = body.get("mode", "clean")
            if mode not in ("clean", "abort"):
                raise err_bad_request("mode must be clean or abort")
            with st.lock:
                n = api.active_watches
                st.watch_drop_mode = mode
                st.watch_gen += 1
                st.wake_watches()
            return ok({"dropped": n, "mode": mode})
        if route == "/faults":
            if method == "GET":
                with pol.lock:
                    return ok({"faults": list(pol.faults)})
            if method == "POST":
                rules = body if isinstance(body, list) else [body]
                return ok({"faults": [pol.add_fault(r) for r in rules]}, 201)
            if method == "DELETE":
                with pol.lock:
                    pol.faults = []
                return ok({"faults": []})
        if route == "/unavailable" and method == "POST":
            mgr.set_unavailable(body.get("duration_ms"), body.get("drop_connections", True),
                                current=self.connection)
            return ok({"unavailable": True})
        if route == "/available" and method == "POST":
            mgr.set_available()
            return ok({"unavailable": False, "port": api.port})
        if route == "/deny":
            if method == "GET":
                with pol.lock:
                    return ok({"rules": list(pol.deny)})
            if method == "POST":
                rules = body if isinstance(body, list) else body.get("rules", [body])
                with pol.lock:
                    pol.deny.extend(Policy._norm(r) for r in rules)
                    return ok({"rules": list(pol.deny)}, 201)
            if method == "DELETE":
                with pol.lock:
                    pol.deny = []
                return ok({"rules": []})
        if route == "/allow":
            if method == "GET":
                with pol.lock:
                    return ok({"rules": pol.allow})
            if method in ("POST", "PUT"):
                rules = body if isinstance(body, list) else body.get("rules", [])
                with pol.lock:
                    pol.allow = [Policy._norm(r) for r in rules]
                    return ok({"rules": pol.allow})
            if method == "DELETE":
                with pol.lock:
                    pol.allow = None
                return ok({"rules": None})
        if route == "/requests":
            if method == "GET":
                since = int(p.get("since") or 0)
                with pol.lock:
                    out = [r for r in pol.log if r["seq"] > since]
                return ok({"requests": out, "last": pol.log_seq})
            if method == "DELETE":
                with pol.lock:
                    pol.log = []
                return ok({"requests": [], "last": pol.log_seq})
        if route == "/crds" and method == "POST":
            crd = body if body.get("kind") == "CustomResourceDefinition" else crd_object_from_short(body)
            rt = st.types[("apiextensions.k8s.io", "customresourcedefinitions")]
            ctx = Ctx(manager="fake-control")
            out = api.create(rt, "", crd, ctx)
            if api.persister and ctx.wrote_rv:
                api.persister.flush(ctx.wrote_rv)
            return ok(out, 201)
        if route == "/kubelet" and method == "POST":
            return ok(api.kubelet.configure(body))
        if route == "/bookmarks" and method == "POST":
            api.bookmark_interval = float(body.get("interval_seconds", api.bookmark_interval))
            return ok({"interval_seconds": api.bookmark_interval})
        if route == "/settings" and method == "POST":
            if "unconditional_crd_update" in body:
                api.unconditional_crd_update = bool(body["unconditional_crd_update"])
            return ok({"unconditional_crd_update": api.unconditional_crd_update})
        if route == "/objects" and method == "GET":
            return ok(st.dump())
        if route == "/tokens":
            if method == "GET":
                with pol.lock:
                    return ok({"tokens": dict(pol.tokens)})
            if method == "POST":
                with pol.lock:
                    if body.get("replace"):
                        pol.tokens = {}
                    pol.tokens[body["token"]] = body.get("user") or api.args.user
                    return ok({"tokens": dict(pol.tokens)}, 201)
            if method == "DELETE":
                with pol.lock:
                    pol.tokens.pop(body.get("token") or p.get("token"), None)
                    return ok({"tokens": dict(pol.tokens)})
        if route == "/timing":
            return ok(self._control_timing(method, body))
        if route == "/flush" and method == "POST":
            if api.persister:
                api.persister.write_now()
            return ok({"flushed": bool(api.persister)})
        raise err_path_not_found()


    def _control_timing(self, method, body):
        """GET: the timing in force; POST: change the keys given (see Timing.configure);
        DELETE: everything off (the seed stays)."""
        timing = self.server.mgr.api.timing
        if method == "GET":
            return timing.describe()
        if method == "POST":
            try:
                return timing.configure(body)
            except ValueError as e:
                raise err_bad_request(str(e))
        if method == "DELETE":
            timing.reset()
            return timing.describe()
        raise err_method_not_allowed()


class FakeHTTPServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, addr, mgr, is_control, ssl_ctx):
        self.mgr = mgr
        self.is_control = is_control
        self.ssl_ctx = ssl_ctx
        super().__init__(addr, Handler)

    def server_bind(self):
        socketserver.TCPServer.server_bind(self)
        self.server_name = "127.0.0.1"
        self.server_port = self.server_address[1]

    def finish_request(self, request, client_address):
        mgr = self.mgr
        me = threading.current_thread()
        sock = request
        with mgr.lock:
            mgr.threads.add(me)
        try:
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.ssl_ctx is not None:
                request.settimeout(10)
                sock = self.ssl_ctx.wrap_socket(request, server_side=True)
                sock.settimeout(None)
            with mgr.lock:
                mgr.conns.add(sock)
            if mgr.stop_event.is_set():
                return
            Handler(sock, client_address, self)
        except (OSError, ssl.SSLError, ValueError):
            pass
        finally:
            with mgr.lock:
                mgr.conns.discard(sock)
                mgr.threads.discard(me)
            if sock is not request:
                try:
                    sock.close()
                except OSError:
                    pass

    def handle_error(self, request, client_address):
        if self.mgr.api.args.verbose:
            traceback.print_exc()


class ServerManager:
    def __init__(self, api, ssl_ctx):
        self.api = api
        self.ssl_ctx = ssl_ctx
        self.lock = threading.Lock()
        self.conns = set()
        self.threads = set()
        self.stop_event = threading.Event()
        self.main = None
        self.main_thread = None
        self.control = None
        self.control_thread = None
        self.control_port = None
        self.unavailable = False
        self.timer = None
        self.pf_uid = str(uuid.uuid4())
        self.pl_uid = str(uuid.uuid4())

    def listen(self, port):
        srv = FakeHTTPServer(("127.0.0.1", port), self, False, self.ssl_ctx)
        self.main = srv
        self.api.port = srv.server_address[1]
        self.main_thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.2},
                                            name="main-listener", daemon=True)
        self.main_thread.start()

    def listen_control(self, port):
        srv = FakeHTTPServer(("127.0.0.1", port), self, True, None)
        self.control = srv
        self.control_port = srv.server_address[1]
        self.control_thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.2},
                                               name="control-listener", daemon=True)
        self.control_thread.start()

    def drop_connections(self, current=None):
        with self.lock:
            conns = list(self.conns)
        n = 0
        for s in conns:
            if s is current:
                continue
            try:
                s.shutdown(socket.SHUT_RDWR)
                n += 1
            except OSError:
                pass
        return n

    def set_unavailable(self, duration_ms=None, drop=True, current=None):
        with self.lock:
            if self.timer:
                self.timer.cancel()
                self.timer = None
            srv, self.main = self.main, None
            self.unavailable = True
        if srv is not None:
            srv.shutdown()
            srv.server_close()
        if drop:
            main_conns = current
            self.drop_connections(current=main_conns)
        if duration_ms:
            t = threading.Timer(float(duration_ms) / 1000.0, self.set_available)
            t.daemon = True
            with self.lock:
                self.timer = t
            t.start()

    def set_available(self):
        with self.lock:
            if self.timer:
                self.timer.cancel()
                self.timer = None
            if self.main is not None or self.stop_event.is_set():
                return
            self.unavailable = False
        last_err = None
        for _ in range(50):
            try:
                self.listen(self.api.port)
                return
            except OSError as e:
                last_err = e
                time.sleep(0.1)
        raise RuntimeError("could not listen again on port %d: %s" % (self.api.port, last_err))

    def shutdown(self):
        self.stop_event.set()
        with self.lock:
            if self.timer:
                self.timer.cancel()
        for srv in (self.main, self.control):
            if srv is not None:
                srv.shutdown()
                srv.server_close()

    def join_handlers(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                threads = list(self.threads)
            if not threads:
                return True
            threads[0].join(timeout=max(0.01, min(0.2, deadline - time.monotonic())))
        return False


# ----------------------------------------------------------------------------------------
# Certificates, kubeconfig, main
# ----------------------------------------------------------------------------------------


def ensure_certs(d):
    paths = {k: os.path.join(d, k) for k in ("ca.crt", "ca.key", "server.crt", "server.key")}
    if all(os.path.exists(p) for p in paths.values()):
        return paths

    def run(*cmd):
        r = subprocess.run(["openssl"] + list(cmd), cwd=d, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("openssl %s failed: %s" % (cmd[0], r.stderr.decode(errors="replace")))
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "3650",
        "-subj", "/CN=sublease-fake-apiserver-ca",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", "-new", *ec, "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=127.0.0.1")
    with open(os.path.join(d, "server-ext.cnf"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,IP:0:0:0:0:0:0:0:1,DNS:localhost\n"
                "basicConstraints=CA:FALSE\n"
                "keyUsage=critical,digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=serverAuth\n"
                "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "3650", "-extfile", "server-ext.cnf")
    for k in ("ca.key", "server.key"):
        os.chmod(paths[k], 0o600)
    return paths


def write_atomic(path, text, mode=0o644):
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=d)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def kubeconfig_text(url, ca_pem, token):
    lines = ["apiVersion: v1", "kind: Config", "clusters:", "- name: fake", "  cluster:",
             "    server: %s" % url]
    if ca_pem is not None:
        lines.append("    certificate-authority-data: %s" % base64.b64encode(ca_pem).decode())
    lines += ["contexts:", "- name: fake", "  context:", "    cluster: fake", "    user: fake-user",
              "    namespace: default", "current-context: fake", "preferences: {}", "users:",
              "- name: fake-user", "  user:", "    token: %s" % token, ""]
    return "\n".join(lines)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=0, help="API port on 127.0.0.1 (0: pick a free one)")
    ap.add_argument("--control-port", type=int, default=0,
                    help="plain-HTTP control port on 127.0.0.1 (0: pick one; -1: none). The control "
                         "API is also served under /_fake/ on the API port.")
    ap.add_argument("--state-dir", required=True, help="certificates, kubeconfig, token go here")
    ap.add_argument("--token", help="bearer token (default: reuse STATE/token or make one)")
    ap.add_argument("--user", default="sublease-test", help="user name the token authenticates as")
    ap.add_argument("--anonymous", action="store_true", help="accept requests without a token")
    ap.add_argument("--plain-http", action="store_true", help="serve http:// instead of https://")
    ap.add_argument("--watch-window", type=int, default=1000,
                    help="events kept per resource for watch resumption / Exact lists")
    ap.add_argument("--watch-timeout", type=float, default=1800.0,
                    help="watch length when the client gives no timeoutSeconds")
    ap.add_argument("--bookmark-interval", type=float, default=1.0,
                    help="seconds between BOOKMARK events on watches that allow them")
    ap.add_argument("--pod-grace-scale", type=float, default=1.0,
                    help="the fake kubelet finishes a terminating pod after grace*scale seconds")
    ap.add_argument("--persist", help="JSON snapshot file: written on every change, loaded at start")
    ap.add_argument("--load", help="JSON snapshot file (as --persist writes it) loaded at start and never "
                    "written: a large starting state without the cost of persisting every change")
    ap.add_argument("--no-namespace-check", action="store_true",
                    help="allow namespaced objects in namespaces that do not exist")
    ap.add_argument("--ready-file", help="written (JSON) once the server accepts connections")
    ap.add_argument("--verbose", action="store_true")
    add_timing_args(ap)
    return ap.parse_args(argv)


def add_timing_args(ap):
    g = ap.add_argument_group("timing (off by default; each flag overrides its FAKEAPI_* variable; "
                              "see docs/fake-apiserver.md)")
    g.add_argument("--timing", choices=sorted(TIMING_PRESETS),
                   help="a preset (FAKEAPI_TIMING): realistic or off")
    g.add_argument("--watch-delay-ms", dest="timing_watch_delay_ms", metavar="RES=MIN-MAX,...",
                   help="watch delivery delay per resource, e.g. pods=100-500,*=0-50 "
                        "(FAKEAPI_WATCH_DELAY_MS)")
    g.add_argument("--write-latency-ms", dest="timing_write_latency_ms", metavar="MIN-MAX",
                   help="time each write takes on the one serial commit timeline (FAKEAPI_WRITE_LATENCY_MS)")
    g.add_argument("--throttle-rate", dest="timing_throttle_rate", metavar="P",
                   help="probability of 429 on a non-watch request (FAKEAPI_THROTTLE_RATE)")
    g.add_argument("--throttle-retry-after", dest="timing_throttle_retry_after", metavar="S",
                   help="Retry-After seconds of those 429s, default 1 (FAKEAPI_THROTTLE_RETRY_AFTER)")
    g.add_argument("--error-rate", dest="timing_error_rate", metavar="P",
                   help="probability of 500 on a non-watch request (FAKEAPI_ERROR_RATE)")
    g.add_argument("--error-write-phase", dest="timing_error_write_phase", choices=ERROR_WRITE_PHASES,
                   help="a 500 on a write comes before it is applied, after, or either at random; "
                        "default before (FAKEAPI_ERROR_WRITE_PHASE)")
    g.add_argument("--timing-seed", dest="timing_seed", metavar="N",
                   help="seed of every random draw (FAKEAPI_TIMING_SEED); printed at start")


def main(argv=None):
    args = parse_args(argv if argv is not None else sys.argv[1:])
    state = os.path.abspath(args.state_dir)
    os.makedirs(state, exist_ok=True)
    ssl_ctx = None
    certs = None
    if not args.plain_http:
        certs = ensure_certs(state)
        ssl_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ssl_ctx.load_cert_chain(certs["server.crt"], certs["server.key"])
        ssl_ctx.set_alpn_protocols(["http/1.1"])
    token_file = os.path.join(state, "token")
    token = args.token
    if not token:
        if os.path.exists(token_file):
            token = open(token_file).read().strip()
        if not token:
            token = "".join(random.SystemRandom().choice(string.ascii_letters + string.digits)
                            for _ in range(40))
    write_atomic(token_file, token + "\n", 0o600)

    api = Api(args)
    try:
        api.timing.set_seed(None)
        api.timing.configure(timing_settings_from(args, os.environ))
    except ValueError as e:
        sys.stderr.write("fake-apiserver: %s\n" % e)
        return 2
    api.policy.tokens[token] = args.user
    api.bootstrap()
    mgr = ServerManager(api, ssl_ctx)
    mgr.listen(args.port)
    if args.control_port >= 0:
        mgr.listen_control(args.control_port)
    scheme = "http" if args.plain_http else "https"
    url = "%s://127.0.0.1:%d" % (scheme, api.port)
    ca_pem = open(certs["ca.crt"], "rb").read() if certs else None
    kubeconfig = os.path.join(state, "kubeconfig")
    write_atomic(kubeconfig, kubeconfig_text(url, ca_pem, token), 0o600)
    sa = os.path.join(state, "serviceaccount")
    os.makedirs(sa, exist_ok=True)
    write_atomic(os.path.join(sa, "token"), token, 0o600)
    write_atomic(os.path.join(sa, "namespace"), "default")
    if ca_pem:
        write_atomic(os.path.join(sa, "ca.crt"), ca_pem.decode())
    ready = {"pid": os.getpid(), "port": api.port, "url": url, "host": "127.0.0.1",
             "control_port": mgr.control_port,
             "control_url": "http://127.0.0.1:%d" % mgr.control_port if mgr.control_port else None,
             "kubeconfig": kubeconfig, "token": token, "token_file": token_file,
             "ca_file": certs["ca.crt"] if certs else None,
             "cert_file": certs["server.crt"] if certs else None,
             "serviceaccount_dir": sa, "state_dir": state, "persist": args.persist,
             "resourceVersion": api.store.rv, "timing": api.timing.describe()}
    if args.ready_file:
        write_atomic(args.ready_file, json.dumps(ready, indent=2) + "\n")
    stop = threading.Event()
    if os.environ.get("FAKEAPI_YAPPI"):
        import yappi, atexit
        yappi.set_clock_type("cpu")
        yappi.start()
        def dump():
            yappi.stop()
            st = yappi.get_func_stats()
            st.sort("tsub")
            with open(os.environ["FAKEAPI_YAPPI"], "w") as o:
                st.print_all(out=o, columns={0: ("name", 60), 1: ("ncall", 10), 2: ("tsub", 8), 3: ("ttot", 8)})
            st.sort("ttot")
            with open(os.environ["FAKEAPI_YAPPI"] + ".tot", "w") as o:
                st.print_all(out=o, columns={0: ("name", 60), 1: ("ncall", 10), 2: ("tsub", 8), 3: ("ttot", 8)})
        atexit.register(dump)

    def on_signal(signum, frame):
        stop.set()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sys.stderr.write("fake-apiserver: serving %s (control %s), state %s\n"
                     % (url, ready["control_url"], state))
    t = api.timing.describe()
    sys.stderr.write("fake-apiserver: timing seed %d (replay with FAKEAPI_TIMING_SEED=%d): watch delay "
                     "%s ms, write latency %s ms, throttle %s (Retry-After %ds), errors %s (%s writes)\n"
                     % (t["seed"], t["seed"], t["watch_delay_ms"] or "off", t["write_latency_ms"],
                        t["throttle_rate"], t["throttle_retry_after"], t["error_rate"],
                        t["error_write_phase"]))
    sys.stderr.flush()
    while not stop.wait(0.5):
        pass
    # Orderly stop: watches end with their terminating chunk, listeners close, idle
    # keep-alive connections are shut, handler threads are joined, the snapshot is flushed.
    with api.store.lock:
        api.store.stopping = True
    api.store.wake_all()
    mgr.shutdown()
    deadline = time.monotonic() + 2.0
    while api.active_watches and time.monotonic() < deadline:
        time.sleep(0.02)
    mgr.drop_connections()
    joined = mgr.join_handlers(5.0)
    api.kubelet.close()
    if api.persister:
        api.persister.close()
    if args.ready_file:
        try:
            os.unlink(args.ready_file)
        except OSError:
            pass
    sys.stderr.write("fake-apiserver: stopped%s\n" % ("" if joined else " (some handlers still busy)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

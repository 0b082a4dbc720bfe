"""OpenAPI v2 (Swagger 2.0) for the fake API server: the document a kube-apiserver serves
at /openapi/v2, built from the custom resources' structural schemas, as JSON or as the
protobuf that kubectl asks for.

kubectl up to 1.26 (Debian 12 ships 1.20) fetches /openapi/v2 before `apply` (client-side
validation), `explain` and `edit`, and gives up on a 404. It asks for
`application/com.github.proto-openapi.spec.v2@v1.0+protobuf` and parses the answer as
gnostic's `openapi.v2.Document`; this module encodes that message with the handful of
fields kubectl reads (definitions, their types, properties, items, required, description
and the `x-kubernetes-group-version-kind` extension), by hand: the fake server needs the
standard library only.

Built-in kinds have no schema in the fake, so they have no definition here; kubectl then
falls back to the types compiled into it (and skips client-side validation), as it does
for a server without them.
"""

import json
import struct

# What kubectl asks for, and what a kube-apiserver answers with ('@' is not valid in a
# Content-Type: Go's mime parser, and so kubectl, rejects it).
PROTOBUF = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
PROTOBUF_REPLY = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"


def definition_name(group, version, kind):
    """io.k8s.api.core.v1.Pod for the core group, io.kubeovn.v1.Subnet for kubeovn.io."""
    prefix = ".".join(reversed(group.split("."))) if group else "io.k8s.api.core"
    return "%s.%s.%s" % (prefix, version, kind)


def to_v2_schema(s):
    """A structural (OpenAPI v3) schema as a kube-apiserver publishes it in v2: what v2
    cannot say (nullable, int-or-string, preserve-unknown-fields, anyOf...) becomes an
    untyped value with no properties, so that kubectl neither rejects nor prunes it."""
    if not isinstance(s, dict):
        return {}
    out = {}
    for k in ("description", "format", "title"):
        if isinstance(s.get(k), str):
            out[k] = s[k]
    if s.get("nullable") or s.get("x-kubernetes-int-or-string") or \
            s.get("x-kubernetes-preserve-unknown-fields"):
        return out
    t = s.get("type")
    if t == "object":
        if isinstance(s.get("properties"), dict):
            out["type"] = "object"
            out["properties"] = {k: to_v2_schema(v) for k, v in s["properties"].items()}
            if s.get("required"):
                out["required"] = list(s["required"])
        elif isinstance(s.get("additionalProperties"), dict):
            out["type"] = "object"
            out["additionalProperties"] = to_v2_schema(s["additionalProperties"])
        # An object with neither is any value to kubectl (a map needs its value type).
    elif t == "array":
        if isinstance(s.get("items"), dict):
            out["type"] = "array"
            out["items"] = to_v2_schema(s["items"])
    elif t in ("string", "integer", "number", "boolean"):
        out["type"] = t
    return out


def document(types, version):
    """The v2 document (JSON shape) for `types`: (group, version, kind, schema) tuples;
    those without a schema are left out."""
    defs = {}
    for group, ver, kind, schema in types:
        if not schema:
            continue
        d = to_v2_schema(schema)
        if d.get("type") != "object" or "properties" not in d:
            d = {"type": "object", "properties": {}}
        props = d["properties"]
        # The API server adds these to every custom resource's definition.
        props.setdefault("apiVersion", {"type": "string", "description":
                                        "APIVersion defines the versioned schema of this object."})
        props.setdefault("kind", {"type": "string", "description":
                                  "Kind is a string value representing the REST resource."})
        props["metadata"] = {"description": "Standard object's metadata."}
        d["x-kubernetes-group-version-kind"] = [{"group": group, "version": ver, "kind": kind}]
        defs[definition_name(group, ver, kind)] = d
    return {"swagger": "2.0", "info": {"title": "Kubernetes", "version": version},
            "paths": {}, "definitions": defs}


# ---- protobuf (gnostic openapi_v2.proto field numbers) ----

def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(num, payload):
    """A length-delimited field (wire type 2): strings, bytes and messages."""
    if isinstance(payload, str):
        payload = payload.encode()
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def _named(num, name, value_bytes):
    """A Named* entry (name = 1, value = 2) in field `num` of its parent."""
    return _field(num, _field(1, name) + _field(2, value_bytes))


def _yaml_any(value):
    # openapi.v2.Any: yaml = 2. JSON is YAML; kubectl reads extensions through a YAML parser.
    return _field(2, json.dumps(value))


def _encode_schema(s):
    out = b""
    if "$ref" in s:
        out += _field(1, s["$ref"])
    for num, key in ((2, "format"), (3, "title"), (4, "description")):
        if key in s:
            out += _field(num, s[key])
    for r in s.get("required", ()):
        out += _field(19, r)
    if "additionalProperties" in s:
        out += _field(21, _field(1, _encode_schema(s["additionalProperties"])))
    if "type" in s:
        out += _field(22, _field(1, s["type"]))  # TypeItem.value
    if "items" in s:
        out += _field(23, _field(1, _encode_schema(s["items"])))  # ItemsItem.schema
    if "properties" in s:
        out += _field(25, b"".join(_named(1, k, _encode_schema(v))
                                   for k, v in s["properties"].items()))
    for k, v in s.items():
        if k.startswith("x-"):
            out += _named(31, k, _yaml_any(v))
    return out


def encode(doc):
    """The document as the bytes of an openapi.v2.Document message."""
    info = _field(1, doc["info"]["title"]) + _field(2, doc["info"]["version"])
    defs = b"".join(_named(1, k, _encode_schema(v)) for k, v in doc["definitions"].items())
    return _field(1, doc["swagger"]) + _field(2, info) + _field(8, b"") + _field(9, defs)


# A tiny decoder for the tests: field number -> list of raw values.
def decode_fields(buf):
    fields, i = {}, 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _read_varint(buf, i)
        elif wt == 2:
            n, i = _read_varint(buf, i)
            v, i = bytes(buf[i:i + n]), i + n
        elif wt == 1:
            v, i = struct.unpack("<d", buf[i:i + 8])[0], i + 8
        else:
            raise ValueError("wire type %d" % wt)
        fields.setdefault(num, []).append(v)
    return fields


def _read_varint(buf, i):
    n = shift = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i

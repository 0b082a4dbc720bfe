#include "daemon/allocator/lease_table.h"

#include <array>
#include <cstring>
#include <utility>

namespace sublease {
namespace {

// A streaming hash fed piece by piece, so a record hashes its key without building the
// strings: the bytes of all pieces are taken 8 at a time (one multiply per word, not per
// byte as FNV would). IdIndex mixes the result further.
struct KeyHasher {
  uint64_t h = 0x243f6a8885a308d3ULL;
  uint64_t word = 0;
  unsigned filled = 0;  // bytes in `word`
  uint64_t length = 0;

  void Block(uint64_t w) {
    h = (h ^ w) * 0x9e3779b97f4a7c15ULL;
    h ^= h >> 32;
  }
  void Byte(unsigned char c) {
    word |= uint64_t{c} << (8 * filled);
    if (++filled == 8) {
      Block(word);
      word = 0;
      filled = 0;
    }
  }
  KeyHasher& Add(std::string_view s) {
    const char* p = s.data();
    size_t n = s.size();
    length += n;
    for (; n > 0 && filled != 0; --n) Byte(static_cast<unsigned char>(*p++));
    for (; n >= 8; n -= 8, p += 8) {
      uint64_t w;
      std::memcpy(&w, p, 8);
      Block(w);
    }
    for (; n > 0; --n) Byte(static_cast<unsigned char>(*p++));
    return *this;
  }
  KeyHasher& Sep() { return Add(std::string_view("\0", 1)); }
  uint64_t Done() {
    Block(word ^ (length << 56));
    return h;
  }
};

// True when key_owner == prefix + a + b + c, without allocating.
bool OwnerEquals(std::string_view key_owner, std::string_view prefix, std::string_view a,
                 std::string_view b = {}, std::string_view c = {}) {
  if (key_owner.size() != prefix.size() + a.size() + b.size() + c.size()) return false;
  for (std::string_view part : {prefix, a, b, c}) {
    if (key_owner.substr(0, part.size()) != part) return false;
    key_owner.remove_prefix(part.size());
  }
  return true;
}

// How a UID, container ID or MAC is kept: absent (empty text), as bytes (canonical
// text, rebuilt exactly), or as the text itself.
enum Form : uint8_t { kEmpty = 0, kBytes = 1, kText = 2 };

constexpr char kHex[] = "0123456789abcdef";
// Lowercase only: uppercase text is kept as text, so that it round-trips.
constexpr std::array<int8_t, 256> kHexValue = [] {
  std::array<int8_t, 256> t{};
  for (int8_t& v : t) v = -1;
  for (int c = '0'; c <= '9'; ++c) t[c] = static_cast<int8_t>(c - '0');
  for (int c = 'a'; c <= 'f'; ++c) t[c] = static_cast<int8_t>(c - 'a' + 10);
  return t;
}();

// A canonical text form kept as bytes: a pattern where 'x' is a lowercase hex digit and
// any other char must be that exact char ("xx:xx:..."). Where each byte's two digits
// sit is worked out once, at compile time.
struct HexLayout {
  std::string_view pattern;
  std::array<uint8_t, 32> digit_pos{};  // text position of byte i's first digit
  std::array<uint8_t, 8> sep_pos{};     // text positions of the separators
  size_t bytes = 0, seps = 0;

  constexpr explicit HexLayout(std::string_view p) : pattern(p) {
    for (size_t i = 0; i < p.size(); ++i) {
      if (p[i] != 'x') {
        sep_pos[seps++] = static_cast<uint8_t>(i);
      } else if (i == 0 || p[i - 1] != 'x' || (i - digit_pos[bytes - 1]) == 2) {
        digit_pos[bytes++] = static_cast<uint8_t>(i);
      }
    }
  }
  // Fills out[0..bytes) and returns true when `text` is in this form.
  bool Parse(std::string_view text, uint8_t* out) const {
    if (text.size() != pattern.size()) return false;
    for (size_t i = 0; i < seps; ++i) {
      if (text[sep_pos[i]] != pattern[sep_pos[i]]) return false;
    }
    int bad = 0;
    for (size_t i = 0; i < bytes; ++i) {
      int hi = kHexValue[static_cast<unsigned char>(text[digit_pos[i]])];
      int lo = kHexValue[static_cast<unsigned char>(text[digit_pos[i] + 1])];
      bad |= hi | lo;  // negative when either is not a lowercase hex digit
      out[i] = static_cast<uint8_t>((hi << 4) | lo);
    }
    return bad >= 0;
  }
  // Writes pattern.size() chars.
  void Format(const uint8_t* in, char* out) const {
    for (size_t i = 0; i < seps; ++i) out[sep_pos[i]] = pattern[sep_pos[i]];
    for (size_t i = 0; i < bytes; ++i) {
      out[digit_pos[i]] = kHex[in[i] >> 4];
      out[digit_pos[i] + 1] = kHex[in[i] & 0xf];
    }
  }
};

constexpr HexLayout kUuid("xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx");
constexpr HexLayout kContainerId(
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
constexpr HexLayout kMac("xx:xx:xx:xx:xx:xx");
static_assert(kUuid.bytes == 16 && kUuid.seps == 4);
static_assert(kContainerId.bytes == 32 && kContainerId.seps == 0);
static_assert(kMac.bytes == 6 && kMac.seps == 5);
constexpr size_t kLongestForm = 64;

// The text blob: for each present field, its length as a LEB128 varint, then its bytes.
size_t TextSize(std::string_view s) {
  size_t n = 1;
  for (size_t len = s.size(); len >= 0x80; len >>= 7) ++n;
  return n + s.size();
}
char* PutText(char* p, std::string_view s) {
  size_t n = s.size();
  do {
    uint8_t b = n & 0x7f;
    n >>= 7;
    *p++ = static_cast<char>(n ? b | 0x80 : b);
  } while (n);
  std::memcpy(p, s.data(), s.size());
  return p + s.size();
}
std::string_view TakeText(const char*& p) {
  size_t n = 0;
  for (int shift = 0;; shift += 7) {
    uint8_t b = static_cast<uint8_t>(*p++);
    n |= static_cast<size_t>(b & 0x7f) << shift;
    if (!(b & 0x80)) break;
  }
  std::string_view s(p, n);
  p += n;
  return s;
}

uint64_t AddressHash(uint32_t subnet, const IpAddr& a) {
  U128 v = a.value();
  uint64_t lo = static_cast<uint64_t>(v), hi = static_cast<uint64_t>(v >> 64);
  return lo ^ (hi * 0x9e3779b97f4a7c15ULL) ^
         ((uint64_t{subnet} << 1 | (a.is_v4() ? 0 : 1)) * 0xc2b2ae3d27d4eb4fULL);
}

}  // namespace

// One lease in 104 bytes. Which optional parts are present is in `flags` and `forms`.
struct LeaseTable::Record {
  enum Flag : uint8_t { kLive = 1, kHasV4 = 2, kHasV6 = 4, kSticky = 8, kHasPodName = 16 };
  StringPool::Id subnet = 0, pod_namespace = 0, ifname = 0, provider = 0;
  // Pod name (when non-empty), then the UID, container ID and MAC kept as text, in that
  // order (see PutText); null when there is none of them.
  std::unique_ptr<char[]> text;
  uint64_t v6[2] = {0, 0};  // high, low
  uint32_t v4 = 0;
  uint32_t key_hash = 0;  // IdIndex::Mix of the key's hash, for Erase
  uint8_t uid[16] = {};
  uint8_t container_id[32] = {};
  uint8_t mac[6] = {};
  uint8_t flags = 0;
  // Form of the UID (bits 0-1), container ID (2-3), MAC (4-5); LeaseState (6-7).
  uint8_t forms = 0;

  Form uid_form() const { return static_cast<Form>(forms & 3); }
  Form cid_form() const { return static_cast<Form>((forms >> 2) & 3); }
  Form mac_form() const { return static_cast<Form>((forms >> 4) & 3); }
  LeaseState state() const { return static_cast<LeaseState>(forms >> 6); }
  void set_state(LeaseState s) {
    forms = static_cast<uint8_t>((forms & 0x3f) | (static_cast<uint8_t>(s) << 6));
  }

  struct Texts {
    std::string_view pod_name, uid, container_id, mac;
  };
  Texts TextFields() const {
    Texts t;
    if (!text) return t;
    const char* p = text.get();
    if (flags & kHasPodName) t.pod_name = TakeText(p);
    if (uid_form() == kText) t.uid = TakeText(p);
    if (cid_form() == kText) t.container_id = TakeText(p);
    if (mac_form() == kText) t.mac = TakeText(p);
    return t;
  }
};
static_assert(static_cast<int>(LeaseState::kReleased) < 4, "LeaseState fits in 2 bits");

namespace {

// Rebuilds a field kept as bytes or text; `buf` holds the rebuilt text when bytes.
std::string_view FieldText(Form form, const uint8_t* bytes, const HexLayout& layout,
                           std::string_view text, char* buf) {
  switch (form) {
    case kEmpty:
      return {};
    case kBytes:
      layout.Format(bytes, buf);
      return {buf, layout.pattern.size()};
    case kText:
      return text;
  }
  return {};
}

// The form a field is kept in; fills `bytes` when that is kBytes.
Form ChooseForm(std::string_view value, const HexLayout& layout, uint8_t* bytes) {
  if (value.empty()) return kEmpty;
  return layout.Parse(value, bytes) ? kBytes : kText;
}

}  // namespace

LeaseTable::LeaseTable() {
  static_assert(sizeof(Record) <= 104, "the record is the per-lease cost; keep it small");
}
LeaseTable::~LeaseTable() = default;

LeaseTable::Record& LeaseTable::At(Id id) {
  return chunks_[id >> kChunkBits][id & ((1u << kChunkBits) - 1)];
}
const LeaseTable::Record& LeaseTable::At(Id id) const {
  return chunks_[id >> kChunkBits][id & ((1u << kChunkBits) - 1)];
}
bool LeaseTable::Live(Id id) const { return id < next_ && (At(id).flags & Record::kLive); }

void LeaseTable::Encode(const Lease& lease, Record& r) {
  r.subnet = pool_.Intern(lease.subnet);
  r.pod_namespace = pool_.Intern(lease.owner.pod_namespace);
  r.ifname = pool_.Intern(lease.owner.ifname);
  r.provider = pool_.Intern(lease.provider);
  r.flags = Record::kLive;
  const Owner& o = lease.owner;
  Form uid = ChooseForm(o.pod_uid, kUuid, r.uid);
  Form cid = ChooseForm(o.container_id, kContainerId, r.container_id);
  Form mac = ChooseForm(lease.mac, kMac, r.mac);
  r.forms = static_cast<uint8_t>(uid | cid << 2 | mac << 4);
  r.set_state(lease.state);
  // The blob, sized first so it is one exact allocation.
  size_t size = 0;
  if (!o.pod_name.empty()) {
    r.flags |= Record::kHasPodName;
    size += TextSize(o.pod_name);
  }
  if (uid == kText) size += TextSize(o.pod_uid);
  if (cid == kText) size += TextSize(o.container_id);
  if (mac == kText) size += TextSize(lease.mac);
  r.text.reset();
  if (size > 0) {
    r.text = std::make_unique_for_overwrite<char[]>(size);
    char* p = r.text.get();
    if (!o.pod_name.empty()) p = PutText(p, o.pod_name);
    if (uid == kText) p = PutText(p, o.pod_uid);
    if (cid == kText) p = PutText(p, o.container_id);
    if (mac == kText) p = PutText(p, lease.mac);
  }
  if (lease.v4) {
    r.flags |= Record::kHasV4;
    r.v4 = static_cast<uint32_t>(lease.v4->value());
  }
  if (lease.v6) {
    r.flags |= Record::kHasV6;
    r.v6[0] = static_cast<uint64_t>(lease.v6->value() >> 64);
    r.v6[1] = static_cast<uint64_t>(lease.v6->value());
  }
  if (lease.sticky) r.flags |= Record::kSticky;
}

void LeaseTable::ReleaseInterned(const Record& r) {
  for (StringPool::Id id : {r.subnet, r.pod_namespace, r.ifname, r.provider}) pool_.Unref(id);
}

uint64_t LeaseTable::KeyHash(const Record& r) const {
  // Mirrors AttachmentKey::For: "pod:<ns>/<name>" when a pod is known, else "container:<id>".
  Record::Texts t = r.TextFields();
  KeyHasher f;
  f.Add(pool_.Get(r.subnet)).Sep();
  if (r.flags & Record::kHasPodName) {
    f.Add("pod:").Add(pool_.Get(r.pod_namespace)).Add("/").Add(t.pod_name);
  } else {
    char buf[kLongestForm];
    f.Add("container:")
        .Add(FieldText(r.cid_form(), r.container_id, kContainerId, t.container_id, buf));
  }
  return f.Sep().Add(pool_.Get(r.ifname)).Done();
}

bool LeaseTable::KeyEquals(const Record& r, const AttachmentKey& key) const {
  if (pool_.Get(r.subnet) != key.subnet || pool_.Get(r.ifname) != key.ifname) return false;
  Record::Texts t = r.TextFields();
  if (r.flags & Record::kHasPodName) {
    return OwnerEquals(key.owner, "pod:", pool_.Get(r.pod_namespace), "/", t.pod_name);
  }
  char buf[kLongestForm];
  return OwnerEquals(key.owner, "container:",
                     FieldText(r.cid_form(), r.container_id, kContainerId, t.container_id, buf));
}

LeaseTable::Id LeaseTable::FindId(const AttachmentKey& key) const {
  uint64_t h = KeyHasher().Add(key.subnet).Sep().Add(key.owner).Sep().Add(key.ifname).Done();
  return by_key_.Find(IdIndex::Mix(h), [&](Id id) { return KeyEquals(At(id), key); });
}

LeaseTable::Id LeaseTable::FindByAddress(std::string_view subnet, const IpAddr& address) const {
  std::optional<StringPool::Id> sid = pool_.Lookup(subnet);
  if (!sid) return kNone;
  return by_address_.Find(IdIndex::Mix(AddressHash(*sid, address)), [&](Id id) {
    const Record& r = At(id);
    if (r.subnet != *sid) return false;
    if (address.is_v4()) return (r.flags & Record::kHasV4) && r.v4 == address.value();
    return (r.flags & Record::kHasV6) && ((U128{r.v6[0]} << 64) | r.v6[1]) == address.value();
  });
}

Lease LeaseTable::Get(Id id) const {
  const Record& r = At(id);
  Record::Texts t = r.TextFields();
  char buf[kLongestForm];
  Lease l;
  l.subnet = pool_.Get(r.subnet);
  l.owner.pod_namespace = pool_.Get(r.pod_namespace);
  l.owner.pod_name = t.pod_name;
  l.owner.pod_uid = FieldText(r.uid_form(), r.uid, kUuid, t.uid, buf);
  l.owner.container_id = FieldText(r.cid_form(), r.container_id, kContainerId, t.container_id, buf);
  l.owner.ifname = pool_.Get(r.ifname);
  if (r.flags & Record::kHasV4) l.v4 = IpAddr(Family::kV4, r.v4);
  if (r.flags & Record::kHasV6) l.v6 = IpAddr(Family::kV6, (U128{r.v6[0]} << 64) | r.v6[1]);
  l.state = r.state();
  l.sticky = r.flags & Record::kSticky;
  l.mac = FieldText(r.mac_form(), r.mac, kMac, t.mac, buf);
  l.provider = pool_.Get(r.provider);
  return l;
}

std::optional<Lease> LeaseTable::Find(const AttachmentKey& key) const {
  Id id = FindId(key);
  if (id == kNone) return std::nullopt;
  return Get(id);
}

LeaseState LeaseTable::state(Id id) const { return At(id).state(); }

std::string LeaseTable::HolderDescription(Id id) const { return Get(id).HolderDescription(); }

LeaseTable::Id LeaseTable::Insert(const Lease& lease) {
  Id id;
  if (!free_.empty()) {
    id = free_.back();
    free_.pop_back();
  } else {
    id = next_++;
    if ((id >> kChunkBits) >= chunks_.size()) {
      chunks_.push_back(std::make_unique<Record[]>(size_t{1} << kChunkBits));
    }
  }
  Record& r = At(id);
  Encode(lease, r);
  r.key_hash = IdIndex::Mix(KeyHash(r));
  by_key_.Insert(r.key_hash, id);
  if (lease.v4) by_address_.Insert(IdIndex::Mix(AddressHash(r.subnet, *lease.v4)), id);
  if (lease.v6) by_address_.Insert(IdIndex::Mix(AddressHash(r.subnet, *lease.v6)), id);
  ++size_;
  return id;
}

void LeaseTable::Update(Id id, const Lease& lease) {
  Record fresh;
  Encode(lease, fresh);  // interns before the old references go: shared ids stay alive
  Record& old = At(id);
  fresh.key_hash = old.key_hash;
  ReleaseInterned(old);
  old = std::move(fresh);
}

void LeaseTable::SetState(Id id, LeaseState state) { At(id).set_state(state); }

void LeaseTable::Erase(Id id) {
  Record& r = At(id);
  by_key_.Erase(r.key_hash, id);
  if (r.flags & Record::kHasV4) {
    by_address_.Erase(IdIndex::Mix(AddressHash(r.subnet, IpAddr(Family::kV4, r.v4))), id);
  }
  if (r.flags & Record::kHasV6) {
    IpAddr v6(Family::kV6, (U128{r.v6[0]} << 64) | r.v6[1]);
    by_address_.Erase(IdIndex::Mix(AddressHash(r.subnet, v6)), id);
  }
  ReleaseInterned(r);
  r = Record{};
  free_.push_back(id);
  --size_;
}

}  // namespace sublease

// libFuzzer harness for one wire decoder, chosen at compile time by SUBLEASE_FUZZ_TARGET:
// the daemon decodes CniRequest and GcRequest from its socket, the plugin decodes
// CniReply and error bodies. An accepted message must survive encode -> decode unchanged.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "common/wire.h"

namespace {

void Check(bool ok) {
  if (!ok) std::abort();
}

template <typename T, typename Decode, typename Encode>
void RoundTrip(std::string_view bytes, Decode decode, Encode encode) {
  auto decoded = decode(bytes);
  if (!decoded) {
    Check(decoded.error().code == sublease::Code::kInvalidArgument);
    return;
  }
  auto again = decode(encode(*decoded));
  Check(again.has_value());
  Check(*again == *decoded);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sublease;
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
#if SUBLEASE_FUZZ_TARGET == 1
  RoundTrip<CniRequest>(bytes, DecodeCniRequest, EncodeCniRequest);
#elif SUBLEASE_FUZZ_TARGET == 2
  RoundTrip<GcRequest>(bytes, DecodeGcRequest, EncodeGcRequest);
#elif SUBLEASE_FUZZ_TARGET == 3
  RoundTrip<CniReply>(bytes, DecodeCniReply, EncodeCniReply);
#elif SUBLEASE_FUZZ_TARGET == 4
  // The status comes from the HTTP status line; let the first byte pick a plausible one.
  int status = size == 0 ? 500 : 400 + data[0] % 200;
  Error e = DecodeWireError(status, size == 0 ? bytes : bytes.substr(1));
  Check(!e.message.empty());
  Error again = DecodeWireError(HttpStatusFor(e.code), EncodeWireError(e));
  Check(again.code == e.code && again.message == e.message);
#else
#error "SUBLEASE_FUZZ_TARGET must be 1..4"
#endif
  return 0;
}

// libFuzzer target: the fuzzer's bytes become an operation sequence, which
// the model-based checker (tests/model/) runs against the real semaphore
// and the reference model, comparing every observable after every step.
// A mismatch prints the sequence in the replay form and aborts; crashes and
// sanitizer reports are caught by libFuzzer as usual.
//
// Byte layout (every input decodes to some sequence):
//   [0] keys-1 (mod 4)   [1] limit-1 (low 2 bits); bit 7 set: a total limit
//       of 1 + (bits 2-6) % (keys * limit)
//   [2] shards: 1 << (b % 3); max_waiters_per_key: (b / 3) % 5 -> 0, 1, 2,
//       else unbounded
//   then 4 bytes per step, at most 256 steps:
//   [0] kind (mod 16: the order of keysem::model::kind, set_limit and
//       reset_limit last)
//   [1] key (low 2 bits mod keys), an acquire's deadline (bits 2-3: 1 ->
//       past, 2 -> later, else none), count (high nibble: 14 -> limit+1,
//       15 -> 0, else 1 + x % limit; set_limit: 1 + x % (limit + 1))
//   [2] token (low nibble mod 9), signal type (bits 4-6 mod 5), cancellable (bit 7)
//   [3] handler action (low 3 bits), its key / target (high bits)
#include "../model/checker.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace {

using namespace keysem::model;

sequence decode(const std::uint8_t* data, std::size_t size) {
  sequence seq;
  if (size < 3) {
    return seq;
  }
  seq.cfg.keys = 1 + data[0] % 4;
  seq.cfg.limit = 1 + data[1] % 4;
  seq.cfg.shards = 1 << (data[2] % 3);
  const int bound = (data[2] / 3) % 5;
  seq.cfg.max_waiters = bound < 3 ? bound : -1;
  if ((data[1] & 0x80) != 0) seq.cfg.total = 1 + ((data[1] >> 2) & 0x1F) % (seq.cfg.keys * seq.cfg.limit);
  // A handler's try_acquire must never be invalid (it would throw).
  const int handler_max = seq.cfg.total > 0 ? std::min(seq.cfg.limit, seq.cfg.total) : seq.cfg.limit;
  for (std::size_t i = 3; i + 4 <= size && seq.steps.size() < 256; i += 4) {
    const std::uint8_t* b = data + i;
    step s;
    s.what = static_cast<kind>(b[0] % kind_count);
    s.key = (b[1] & 3) % seq.cfg.keys;
    const int count = b[1] >> 4;
    s.n = count == 15 ? 0 : count == 14 ? seq.cfg.limit + 1 : 1 + count % seq.cfg.limit;
    if (s.what == kind::set_limit) s.n = 1 + count % (seq.cfg.limit + 1);
    s.tok = static_cast<token>((b[2] & 0x0F) % 9);
    if (s.what == kind::acquire && s.tok == token::deferred) s.tok = token::callback;
    s.type = static_cast<sig>(((b[2] >> 4) & 7) % 5);
    s.cancellable = (b[2] & 0x80) != 0;
    s.then.what = static_cast<act>(b[3] & 7);
    s.then.key = (b[3] >> 3) % seq.cfg.keys;
    s.then.n = 1 + (b[3] >> 5) % handler_max;
    s.then.target = b[3] >> 3;
    s.then.type = static_cast<sig>(1 + (b[3] >> 3) % 4);
    s.target = b[3];
    if (s.what == kind::acquire) {
      const int dl = (b[1] >> 2) & 3;
      s.dl = dl == 1 ? deadline::past : dl == 2 ? deadline::later : deadline::none;
    }
    seq.steps.push_back(s);
  }
  return seq;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const sequence seq = decode(data, size);
  if (seq.steps.empty()) {
    return 0;
  }
  if (const auto f = check_sequence(seq)) {
    std::fprintf(stderr, "keysem fuzz: model mismatch at step %zu: %s\n--- replay ---\n%s---\n", f->step,
                 f->what.c_str(), print(seq).c_str());
    std::abort();
  }
  return 0;
}

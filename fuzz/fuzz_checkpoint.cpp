// libFuzzer target: checkpoint loading of the haf_rm example trainer (examples/haf_rm/
// checkpoint.hpp). The first input byte picks what the rest is:
//   even: a whole checkpoint file (header line + payload): exercises the header parser and the
//         size and checksum checks;
//   odd:  a payload only, given a valid header, so it reaches LibTorch's archive reader and the
//         key reads the trainer does (meta string, sub-archives, tensors).
//
// Expected outcomes: an archive, a CheckpointError, or a c10::Error from reading a key of a
// damaged archive (the trainer reports those as "incomplete or damaged"). Another exception, a
// crash or a sanitizer report is a finding. LibTorch itself is not instrumented: its reader runs
// here, but libFuzzer sees no coverage inside it.
//
// HAFRM_FUZZ_WRITE_SEEDS=DIR makes the binary write its seed inputs to DIR and exit (the seeds in
// fuzz/corpus/checkpoint were made that way).
#include <torch/torch.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>

#include "checkpoint.hpp"

namespace rm = hafrm::examples::rm;

namespace {

std::string with_header(std::string_view payload) {
  return std::string(rm::kCheckpointMagic) + " " + std::to_string(rm::kCheckpointFormat) + " " +
         std::to_string(payload.size()) + " " +
         rm::detail::hex64(rm::detail::fnv1a(payload.data(), payload.size())) + "\n" +
         std::string(payload);
}

// A miniature of the trainer's checkpoint: a metadata string, a sub-archive and tensors.
std::string seed_payload() {
  torch::serialize::OutputArchive a, model;
  a.write("meta", c10::IValue(std::string(R"({"format":"hafrm-examples-haf_rm","state":{}})")));
  model.write("w", torch::arange(6, torch::kFloat).reshape({2, 3}));
  a.write("model", model);
  a.write("order", torch::arange(4, torch::kLong));
  std::ostringstream s;
  a.save_to(s);
  return s.str();
}

void write_seeds(const std::filesystem::path& dir) {
  std::filesystem::create_directories(dir);
  const std::string payload = seed_payload();
  const auto put = [&](const char* name, const std::string& bytes) {
    std::ofstream(dir / name, std::ios::binary) << bytes;
  };
  put("payload", "\x01" + payload);
  put("file", std::string(1, '\0') + with_header(payload));
  put("header_negative_size", std::string(1, '\0') + rm::kCheckpointMagic +
                                  " 1 -1 0123456789abcdef\n" + payload.substr(0, 64));
}

// Known LibTorch behaviour, reported rather than fuzzed again and again: its archive reader
// allocates (and fills) the record size a zip directory entry claims before reading it, so a
// payload claiming a 4 GiB record takes 4 GiB of memory. Our checksum makes such a payload
// reachable only on purpose. Payloads holding any zip size field larger than the payload itself
// (32-bit sizes of local and central headers, 64-bit zip64 extra fields) are skipped; the scan
// looks at every signature anywhere, so it skips more than necessary, never less.
bool claims_more_than_it_holds(std::string_view p) {
  const auto u16 = [&](std::size_t at) -> uint64_t {
    return at + 2 <= p.size() ? uint64_t(uint8_t(p[at])) | uint64_t(uint8_t(p[at + 1])) << 8 : 0;
  };
  const auto u32 = [&](std::size_t at) { return u16(at) | u16(at + 2) << 16; };
  const auto u64 = [&](std::size_t at) { return u32(at) | u32(at + 4) << 32; };
  const uint64_t n = p.size();
  for (std::size_t i = 0; i + 4 <= p.size(); ++i) {
    if (p[i] != 'P' || p[i + 1] != 'K') continue;
    const uint64_t sig = u32(i);
    if (sig == 0x04034b50 && (u32(i + 18) > n || u32(i + 22) > n)) return true;  // local
    if (sig == 0x02014b50 && (u32(i + 20) > n || u32(i + 24) > n)) return true;  // central
  }
  for (std::size_t i = 0; i + 4 <= p.size(); ++i) {  // zip64 extended information fields
    if (u16(i) != 0x0001) continue;
    const std::size_t len = u16(i + 2);
    for (std::size_t k = 0; k + 8 <= len && i + 4 + k + 8 <= p.size(); k += 8)
      if (u64(i + 4 + k) > n) return true;
  }
  return false;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  torch::set_num_threads(1);
  if (const char* dir = std::getenv("HAFRM_FUZZ_WRITE_SEEDS")) {
    write_seeds(dir);
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  if ((data[0] & 1) && claims_more_than_it_holds(rest)) return -1;  // not added to the corpus
  const std::string bytes = (data[0] & 1) ? with_header(rest) : std::string(rest);
  try {
    auto archive = rm::read_checkpoint_bytes(bytes, "fuzz.pt", torch::kCPU);
    try {
      c10::IValue meta;
      if (archive.try_read("meta", meta) && meta.isString()) (void)meta.toStringRef().size();
      torch::serialize::InputArchive model;
      if (archive.try_read("model", model)) {
        torch::Tensor w;
        (void)model.try_read("w", w);
      }
      torch::Tensor order;
      if (archive.try_read("order", order) && order.defined()) (void)order.sum();
    } catch (const c10::Error&) {
      // A damaged archive whose checksum matches: the trainer turns this into a CheckpointError.
    }
  } catch (const rm::CheckpointError&) {
  } catch (const std::exception& e) {
    std::fprintf(stderr, "unexpected exception: %s\n", e.what());
    std::abort();
  }
  return 0;
}

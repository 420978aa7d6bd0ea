// safetensors.hpp: the safetensors file format (huggingface/safetensors), the F32 subset that
// `haf_rm export` writes and `haf_rm eval` / `haf_rm score` read.
//
// A file is: an unsigned 64-bit little-endian header size N, N bytes of JSON
//   {"__metadata__": {str: str}, NAME: {"dtype": "F32", "shape": [..], "data_offsets": [b, e]}, ..}
// (padded with spaces to a multiple of 8), then the data buffer; [b, e) are byte offsets into the
// buffer, little-endian, C-contiguous. The reader refuses anything it cannot map one to one onto
// float32 tensors: a header size beyond the file, a header that is not a JSON object, a dtype
// other than F32, a shape whose byte size differs from its offsets, and offsets that leave a hole,
// overlap, or run past the buffer. Every error names the file and the tensor or field.
//
//   rm::write_safetensors("m.safetensors", {{"w", torch::ones({2, 3})}}, {{"format", "pt"}});
//   rm::SafetensorsFile f = rm::read_safetensors("m.safetensors");   // SafetensorsError if bad
//   torch::Tensor w = f.at("w");
#pragma once

#include <torch/torch.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace hafrm::examples::rm {

static_assert(std::endian::native == std::endian::little,
              "safetensors.hpp writes and reads the host's float32 bytes as little-endian");

class SafetensorsError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct NamedTensor {
  std::string name;
  torch::Tensor tensor;
};

// A file's tensors (float32, CPU) in the order of their data offsets, and its metadata.
struct SafetensorsFile {
  std::map<std::string, std::string> metadata;
  std::vector<NamedTensor> tensors;

  const torch::Tensor* find(const std::string& name) const {
    for (const auto& t : tensors)
      if (t.name == name) return &t.tensor;
    return nullptr;
  }
  const torch::Tensor& at(const std::string& name) const {
    if (const auto* t = find(name)) return *t;
    throw std::out_of_range("SafetensorsFile::at: no tensor '" + name + "'");
  }
};

// The header's size is bounded so a damaged size field cannot make the reader allocate the
// (claimed) size before noticing the file is shorter; a real header is a few hundred bytes per
// tensor.
inline constexpr uint64_t kMaxSafetensorsHeader = uint64_t{100} << 20;

// Writes `tensors` (any dtype and device; stored as float32, C-contiguous) to `path` with the
// given "__metadata__". Names must be unique, non-empty and not "__metadata__".
inline void write_safetensors(const std::filesystem::path& path,
                              const std::vector<NamedTensor>& tensors,
                              const std::map<std::string, std::string>& metadata = {}) {
  const std::string file = path.string();
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<torch::Tensor> data;
  std::set<std::string> names;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (name.empty() || name == "__metadata__" || !names.insert(name).second)
      throw SafetensorsError("write_safetensors " + file + ": tensor name '" + name +
                             "' is empty, reserved or repeated");
    if (!t.defined())
      throw SafetensorsError("write_safetensors " + file + ": '" + name + "' is undefined");
    auto c = t.detach().to(torch::kCPU, torch::kFloat).contiguous();
    const uint64_t bytes = static_cast<uint64_t>(c.numel()) * sizeof(float);
    header[name] = {
        {"dtype", "F32"}, {"shape", c.sizes().vec()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    data.push_back(std::move(c));
  }
  std::string json = header.dump();
  json.append((8 - json.size() % 8) % 8, ' ');
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw SafetensorsError("write_safetensors: cannot create " + file);
  const uint64_t n = json.size();
  out.write(reinterpret_cast<const char*>(&n), sizeof n);
  out.write(json.data(), static_cast<std::streamsize>(json.size()));
  for (const auto& c : data)
    out.write(static_cast<const char*>(c.data_ptr()), static_cast<std::streamsize>(c.nbytes()));
  out.flush();
  if (!out) throw SafetensorsError("write_safetensors: write error on " + file);
}

namespace detail {

// a * b, or nullopt on overflow past `limit`.
inline bool checked_mul(uint64_t a, uint64_t b, uint64_t& out) {
  if (a != 0 && b > std::numeric_limits<uint64_t>::max() / a) return false;
  out = a * b;
  return true;
}

}  // namespace detail

// Reads and validates a safetensors file; SafetensorsError naming `path` and the tensor or field
// for anything that is not a well-formed F32 file.
inline SafetensorsFile read_safetensors(const std::filesystem::path& path) {
  const std::string file = path.string();
  const auto fail = [&](const std::string& why) -> SafetensorsError {
    return SafetensorsError(file + ": " + why);
  };
  std::ifstream in(path, std::ios::binary);
  if (!in) throw SafetensorsError("cannot open " + file);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw fail("read error");
  if (bytes.size() < 8)
    throw fail("not a safetensors file: " + std::to_string(bytes.size()) +
               " bytes, fewer than the 8-byte header size");
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), sizeof n);
  const uint64_t after = bytes.size() - 8;
  if (n > after || n > kMaxSafetensorsHeader)
    throw fail("header size " + std::to_string(n) + " exceeds the " + std::to_string(after) +
               " bytes after the size field (truncated, or not a safetensors file)");
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(bytes.begin() + 8,
                                   bytes.begin() + 8 + static_cast<std::ptrdiff_t>(n));
  } catch (const nlohmann::json::exception& e) {
    throw fail(std::string("the header is not valid JSON: ") + e.what());
  }
  if (!header.is_object()) throw fail("the header is not a JSON object");
  const uint64_t buffer = after - n;
  const char* base = bytes.data() + 8 + n;

  SafetensorsFile out;
  struct Entry {
    std::string name;
    std::vector<int64_t> shape;
    uint64_t begin, end;
  };
  std::vector<Entry> entries;
  for (const auto& [name, v] : header.items()) {
    if (name == "__metadata__") {
      if (!v.is_object()) throw fail("'__metadata__' is not an object");
      for (const auto& [k, s] : v.items()) {
        if (!s.is_string()) throw fail("'__metadata__." + k + "' is not a string");
        out.metadata[k] = s.get<std::string>();
      }
      continue;
    }
    const std::string where = "tensor '" + name + "'";
    if (!v.is_object()) throw fail(where + " is not an object");
    if (!v.contains("dtype") || !v["dtype"].is_string())
      throw fail(where + ": 'dtype' missing or not a string");
    if (v["dtype"] != "F32")
      throw fail(where + " has dtype " + v["dtype"].get<std::string>() + "; only F32 is read");
    if (!v.contains("shape") || !v["shape"].is_array())
      throw fail(where + ": 'shape' missing or not an array");
    if (!v.contains("data_offsets") || !v["data_offsets"].is_array() ||
        v["data_offsets"].size() != 2 || !v["data_offsets"][0].is_number_unsigned() ||
        !v["data_offsets"][1].is_number_unsigned())
      throw fail(where + ": 'data_offsets' is not two non-negative integers");
    Entry e{name, {}, v["data_offsets"][0].get<uint64_t>(), v["data_offsets"][1].get<uint64_t>()};
    uint64_t numel = 1;
    for (const auto& d : v["shape"]) {
      if (!d.is_number_unsigned() ||
          d.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        throw fail(where + ": 'shape' holds " + d.dump() + ", not a non-negative integer");
      if (!detail::checked_mul(numel, d.get<uint64_t>(), numel))
        throw fail(where + ": 'shape' overflows");
      e.shape.push_back(d.get<int64_t>());
    }
    uint64_t need = 0;
    if (e.begin > e.end)
      throw fail(where + ": 'data_offsets' [" + std::to_string(e.begin) + ", " +
                 std::to_string(e.end) + "] is reversed");
    if (!detail::checked_mul(numel, sizeof(float), need) || need != e.end - e.begin)
      throw fail(where + ": 'data_offsets' [" + std::to_string(e.begin) + ", " +
                 std::to_string(e.end) + "] hold " + std::to_string(e.end - e.begin) +
                 " bytes, its shape " + v["shape"].dump() + " of F32 needs " +
                 std::to_string(numel) + " x 4");
    entries.push_back(std::move(e));
  }
  // The tensors must tile the buffer exactly: no hole, no overlap, nothing past its end.
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t covered = 0;
  const Entry* prev = nullptr;
  for (const auto& e : entries) {
    if (e.begin < covered)
      throw fail("tensor '" + e.name + "' (bytes [" + std::to_string(e.begin) + ", " +
                 std::to_string(e.end) + ")) overlaps tensor '" + prev->name + "'");
    if (e.begin > covered)
      throw fail("data bytes [" + std::to_string(covered) + ", " + std::to_string(e.begin) +
                 ") belong to no tensor");
    if (e.end > buffer)
      throw fail("tensor '" + e.name + "' ends at data byte " + std::to_string(e.end) +
                 ", past the " + std::to_string(buffer) + "-byte data buffer (truncated file)");
    covered = e.end;
    prev = &e;
  }
  if (covered != buffer)
    throw fail("the data buffer holds " + std::to_string(buffer) + " bytes, the tensors cover " +
               std::to_string(covered));
  for (const auto& e : entries) {
    auto t = torch::empty(e.shape, torch::kFloat);
    if (e.end > e.begin) std::memcpy(t.data_ptr(), base + e.begin, e.end - e.begin);
    out.tensors.push_back({e.name, std::move(t)});
  }
  return out;
}

}  // namespace hafrm::examples::rm

// checkpoint.hpp: crash-safe checkpoint files.
//
// A checkpoint is a torch::serialize archive (a zip of tensors and IValues) behind one header
// line, "HAFRM-CHECKPOINT 1 <payload bytes> <fnv1a-64 of the payload, hex>\n". The header lets a
// truncated or bit-flipped file be refused with a clear message before torch parses it. Files are
// written atomically: to "<path>.tmp-<pid>", flushed and fsync'ed, then renamed over <path>, so a
// crash or a second signal mid-write never leaves a half-written checkpoint under the real name.
// A kill -9 mid-write can leave the temporary behind; remove_stale_checkpoint_temporaries()
// (called when a run starts) deletes those whose writer is gone.
//
//   torch::serialize::OutputArchive a;  ...;  rm::write_checkpoint("run/checkpoint.pt", a);
//   torch::serialize::InputArchive in = rm::read_checkpoint("run/checkpoint.pt", device);
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <torch/torch.h>

#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace hafrm::examples::rm {

inline constexpr const char* kCheckpointMagic = "HAFRM-CHECKPOINT";
inline constexpr int kCheckpointFormat = 1;

class CheckpointError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {

inline uint64_t fnv1a(const char* data, std::size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (std::size_t i = 0; i < n; ++i) {
    h ^= static_cast<unsigned char>(data[i]);
    h *= 1099511628211ull;
  }
  return h;
}

inline std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

inline void fsync_path(const std::filesystem::path& p, int flags) {
  const int fd = ::open(p.c_str(), flags);
  if (fd < 0) return;  // best effort (e.g. a directory on a filesystem that refuses O_RDONLY)
  ::fsync(fd);
  ::close(fd);
}

}  // namespace detail

// Serialises `archive` and writes it atomically to `path` (parent directories are created).
inline void write_checkpoint(const std::filesystem::path& path,
                             torch::serialize::OutputArchive& archive) {
  std::ostringstream payload_stream;
  archive.save_to(payload_stream);
  const std::string payload = payload_stream.str();
  const std::string header = std::string(kCheckpointMagic) + " " +
                             std::to_string(kCheckpointFormat) + " " +
                             std::to_string(payload.size()) + " " +
                             detail::hex64(detail::fnv1a(payload.data(), payload.size())) + "\n";
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path());
  const auto tmp = std::filesystem::path(path.string() + ".tmp-" + std::to_string(::getpid()));
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw CheckpointError("cannot write checkpoint " + tmp.string());
    out.write(header.data(), static_cast<std::streamsize>(header.size()));
    out.write(payload.data(), static_cast<std::streamsize>(payload.size()));
    out.flush();
    if (!out) {
      std::error_code ignored;
      std::filesystem::remove(tmp, ignored);
      throw CheckpointError("error writing checkpoint " + tmp.string() + " (disk full?)");
    }
  }
  detail::fsync_path(tmp, O_RDONLY);
  std::filesystem::rename(tmp, path);  // atomic on POSIX within one filesystem
  detail::fsync_path(path.has_parent_path() ? path.parent_path() : ".", O_RDONLY | O_DIRECTORY);
}

// The fields of a checkpoint's header line. parse_checkpoint_header() accepts decimal digits for
// format and size and 16 hex digits in either case for the hash (`hash` holds them in lower case,
// as write_checkpoint() writes them).
struct CheckpointHeader {
  int format = 0;
  uint64_t payload_size = 0;
  std::string hash;
  std::size_t header_bytes = 0;  // the header line with its '\n'
};

namespace detail {

inline bool all_of(std::string_view s, const char* set) {
  return !s.empty() && s.find_first_not_of(set) == std::string_view::npos;
}

}  // namespace detail

// Parses and checks the header at the start of `bytes` (a whole checkpoint file, or at least its
// first line). Throws CheckpointError naming `name`; never allocates from a size in the file.
inline CheckpointHeader parse_checkpoint_header(std::string_view bytes, const std::string& name) {
  // Longer than any header this parser accepts (magic, 9-digit format, 19-digit size, hash).
  constexpr std::size_t kMaxHeader = 80;
  const std::string_view magic(kCheckpointMagic);
  const auto nl = bytes.substr(0, kMaxHeader).find('\n');
  const std::string_view line = bytes.substr(0, nl == std::string_view::npos ? kMaxHeader : nl);
  if (!line.starts_with(magic) || (line.size() > magic.size() && line[magic.size()] != ' '))
    throw CheckpointError("checkpoint " + name +
                          " is not a hafrm example checkpoint (bad header); refusing to load it");
  const auto corrupt = [&](const std::string& what) {
    return CheckpointError("checkpoint " + name + " is corrupt: " + what + "; refusing to load it");
  };
  if (nl == std::string_view::npos) throw corrupt("its header line is unterminated or too long");
  std::vector<std::string_view> fields;
  for (std::size_t at = 0; at <= line.size();) {
    const auto sp = std::min(line.find(' ', at), line.size());
    fields.push_back(line.substr(at, sp - at));
    at = sp + 1;
  }
  if (fields.size() != 4)
    throw corrupt("its header has " + std::to_string(fields.size()) + " fields, expected 4");
  CheckpointHeader h;
  h.header_bytes = nl + 1;
  if (!detail::all_of(fields[1], "0123456789") || fields[1].size() > 9)
    throw corrupt("format \"" + std::string(fields[1]) + "\" in its header is not a number");
  h.format = std::stoi(std::string(fields[1]));
  if (h.format != kCheckpointFormat)
    throw CheckpointError("checkpoint " + name + " has format " + std::to_string(h.format) +
                          ", this trainer reads format " + std::to_string(kCheckpointFormat));
  // 19 digits always fit uint64_t; sizes beyond that are corrupt anyway (no file is that big).
  if (!detail::all_of(fields[2], "0123456789") || fields[2].size() > 19)
    throw corrupt("payload size \"" + std::string(fields[2]) +
                  "\" in its header is not a byte count");
  h.payload_size = std::stoull(std::string(fields[2]));
  // Hex is case-insensitive; the checksum is compared in write_checkpoint()'s lower case.
  if (fields[3].size() != 16 || !detail::all_of(fields[3], "0123456789abcdefABCDEF"))
    throw corrupt("checksum \"" + std::string(fields[3]) + "\" in its header is not 16 hex digits");
  h.hash = std::string(fields[3]);
  for (char& ch : h.hash) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return h;
}

// Verifies an in-memory checkpoint (header, size, checksum) and opens its archive. `name` is
// only used in messages. Every failure is a CheckpointError.
inline torch::serialize::InputArchive read_checkpoint_bytes(std::string_view bytes,
                                                            const std::string& name,
                                                            const torch::Device& device) {
  const CheckpointHeader h = parse_checkpoint_header(bytes, name);
  // Compare against the bytes that exist before trusting the header's size for anything.
  const uint64_t found = bytes.size() - h.header_bytes;
  if (found != h.payload_size)
    throw CheckpointError("checkpoint " + name + " is corrupt: expected " +
                          std::to_string(h.payload_size) + " payload bytes, found " +
                          std::to_string(found) +
                          " (truncated or appended to); refusing to load it");
  const std::string_view payload = bytes.substr(h.header_bytes);
  if (detail::hex64(detail::fnv1a(payload.data(), payload.size())) != h.hash)
    throw CheckpointError("checkpoint " + name +
                          " is corrupt: checksum mismatch; refusing to load it");
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(payload.data(), payload.size(), device);
  } catch (const c10::Error& e) {
    throw CheckpointError("checkpoint " + name + " is corrupt: " + e.what_without_backtrace());
  } catch (const std::exception& e) {  // e.g. std::bad_alloc from sizes inside the archive
    throw CheckpointError("checkpoint " + name + " is corrupt: " + e.what());
  }
  return archive;
}

// Reads and verifies a checkpoint; throws CheckpointError saying what is wrong with the file.
inline torch::serialize::InputArchive read_checkpoint(const std::filesystem::path& path,
                                                      const torch::Device& device) {
  const std::string name = path.string();
  std::ifstream in(path, std::ios::binary);
  if (!in) throw CheckpointError("cannot open checkpoint " + name);
  // The whole file: its size bounds every allocation, whatever the header claims.
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw CheckpointError("read error in checkpoint " + name);
  return read_checkpoint_bytes(bytes, name, device);
}

// Removes "<path>.tmp-<pid>" files that a killed write_checkpoint() left behind: only names of
// exactly that form, only regular files, and only when no process <pid> is alive (a live one may
// be writing; a pid reused by an unrelated process just keeps its file until a later run). Returns
// the removed paths. Best effort: a file that cannot be removed is left alone.
inline std::vector<std::filesystem::path> remove_stale_checkpoint_temporaries(
    const std::filesystem::path& path) {
  namespace fs = std::filesystem;
  std::vector<fs::path> removed;
  const fs::path dir = path.has_parent_path() ? path.parent_path() : fs::path(".");
  const std::string prefix = path.filename().string() + ".tmp-";
  std::error_code ec;
  fs::directory_iterator it(dir, ec), end;
  if (ec) return removed;  // no directory yet: nothing to clean
  for (; it != end; it.increment(ec)) {
    if (ec) break;
    const std::string fname = it->path().filename().string();
    if (!fname.starts_with(prefix)) continue;
    const std::string digits = fname.substr(prefix.size());
    if (!detail::all_of(digits, "0123456789") || digits.size() > 9) continue;
    const long pid = std::stol(digits);
    if (pid <= 0 || pid == static_cast<long>(::getpid())) continue;
    // kill(pid, 0) probes without signalling; EPERM means alive but someone else's.
    if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;
    std::error_code st;
    if (!it->is_regular_file(st) || it->is_symlink(st)) continue;
    if (fs::remove(it->path(), st)) removed.push_back(it->path());
  }
  return removed;
}

}  // namespace hafrm::examples::rm

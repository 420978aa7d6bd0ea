// checkpoint.hpp: crash-safe checkpoint files.
//
// A checkpoint is a torch::serialize archive (a zip of tensors and IValues) behind one header
// line, "HAFRM-CHECKPOINT 1 <payload bytes> <fnv1a-64 of the payload, hex>\n". The header lets a
// truncated or bit-flipped file be refused with a clear message before torch parses it. Files are
// written atomically: to "<path>.tmp-<pid>", flushed and fsync'ed, then renamed over <path>, so a
// crash or a second signal mid-write never leaves a half-written checkpoint under the real name.
//
//   torch::serialize::OutputArchive a;  ...;  rm::write_checkpoint("run/checkpoint.pt", a);
//   torch::serialize::InputArchive in = rm::read_checkpoint("run/checkpoint.pt", device);
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <torch/torch.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>

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

// Reads and verifies a checkpoint; throws CheckpointError saying what is wrong with the file.
inline torch::serialize::InputArchive read_checkpoint(const std::filesystem::path& path,
                                                      const torch::Device& device) {
  const std::string name = path.string();
  std::ifstream in(path, std::ios::binary);
  if (!in) throw CheckpointError("cannot open checkpoint " + name);
  std::string header;
  std::getline(in, header);
  std::istringstream hs(header);
  std::string magic, hash;
  int format = 0;
  std::size_t size = 0;
  hs >> magic >> format >> size >> hash;
  if (magic != kCheckpointMagic)
    throw CheckpointError("checkpoint " + name +
                          " is not a hafrm example checkpoint (bad header); refusing to load it");
  if (format != kCheckpointFormat)
    throw CheckpointError("checkpoint " + name + " has format " + std::to_string(format) +
                          ", this trainer reads format " + std::to_string(kCheckpointFormat));
  std::string payload(size, '\0');
  in.read(payload.data(), static_cast<std::streamsize>(size));
  const auto got = static_cast<std::size_t>(in.gcount());
  if (got != size || in.peek() != std::char_traits<char>::eof())
    throw CheckpointError("checkpoint " + name + " is corrupt: expected " + std::to_string(size) +
                          " payload bytes, found " + (got != size ? std::to_string(got) : "more") +
                          " (truncated or appended to); refusing to load it");
  if (detail::hex64(detail::fnv1a(payload.data(), payload.size())) != hash)
    throw CheckpointError("checkpoint " + name +
                          " is corrupt: checksum mismatch; refusing to load it");
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(payload.data(), payload.size(), device);
  } catch (const c10::Error& e) {
    throw CheckpointError("checkpoint " + name + " is corrupt: " + e.what_without_backtrace());
  }
  return archive;
}

}  // namespace hafrm::examples::rm

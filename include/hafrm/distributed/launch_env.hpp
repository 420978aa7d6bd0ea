// launch_env.hpp: the variables torchrun sets for each process, parsed and checked.
//
//   auto env = hafrm::distributed::LaunchEnv::from_environment();
//   if (!env) { /* WORLD_SIZE unset: a plain single-process run */ }
//
// A malformed variable is a c10::Error naming it and what was expected, in hafrm's form:
//   hafrm::distributed::LaunchEnv::from_environment: environment variable 'RANK' expected an
//   integer in [0, 1], got "2"
// process_group.hpp turns a LaunchEnv into a c10d process group.
#pragma once

#include <charconv>
#include <cstdlib>
#include <optional>
#include <string>
#include <system_error>

#include "hafrm/torch/checks.hpp"

namespace hafrm::distributed {

// What torchrun (or any launcher following its convention) tells a process.
struct LaunchEnv {
  int rank = 0, world_size = 1, local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  // torchrun's agent already serves a TCPStore at MASTER_ADDR:MASTER_PORT: every rank is then a
  // client of it (TORCHELASTIC_USE_AGENT_STORE=True), as torch.distributed does.
  bool agent_store = false;
  int restart_count = 0;  // TORCHELASTIC_RESTART_COUNT: keys of a restarted attempt are fresh

  // nullopt when WORLD_SIZE is unset (a plain single-process run); throws c10::Error naming the
  // variable when one is set but malformed or inconsistent.
  static std::optional<LaunchEnv> from_environment() {
    const char* ws = std::getenv("WORLD_SIZE");
    if (ws == nullptr) return std::nullopt;
    LaunchEnv e;
    e.world_size = parse_int("WORLD_SIZE", ws, 1, 1 << 20);
    e.rank = parse_int("RANK", required("RANK"), 0, e.world_size - 1);
    const char* lr = std::getenv("LOCAL_RANK");
    e.local_rank = lr ? parse_int("LOCAL_RANK", lr, 0, e.world_size - 1) : e.rank;
    if (e.world_size > 1) {
      e.master_addr = required("MASTER_ADDR");
      e.master_port = parse_int("MASTER_PORT", required("MASTER_PORT"), 1, 65535);
    }
    const char* agent = std::getenv("TORCHELASTIC_USE_AGENT_STORE");
    e.agent_store = agent != nullptr && std::string(agent) == "True";
    if (const char* rc = std::getenv("TORCHELASTIC_RESTART_COUNT"))
      e.restart_count = parse_int("TORCHELASTIC_RESTART_COUNT", rc, 0, 1 << 30);
    return e;
  }

 private:
  static constexpr const char* kFn = "hafrm::distributed::LaunchEnv::from_environment";

  static const char* required(const char* name) {
    const char* v = std::getenv(name);
    TORCH_CHECK(v != nullptr && *v != '\0', kFn, ": environment variable '", name,
                "' expected to be set, as WORLD_SIZE is (launch with torchrun, or set RANK, "
                "WORLD_SIZE, MASTER_ADDR and MASTER_PORT)");
    return v;
  }
  static int parse_int(const char* name, const char* text, int lo, int hi) {
    const std::string s(text);
    int v = 0;
    const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    TORCH_CHECK(!s.empty() && ec == std::errc() && ptr == s.data() + s.size() && v >= lo && v <= hi,
                kFn, ": environment variable '", name, "' expected an integer in [", lo, ", ", hi,
                "], got \"", s, "\"");
    return v;
  }
};

}  // namespace hafrm::distributed

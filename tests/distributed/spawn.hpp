// spawn.hpp: starts this test binary (or another program) as N processes with the variables
// torchrun would set, and waits for them under a hard deadline (a stuck rank is killed and the
// test fails instead of hanging). Torch-free.
#pragma once

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace hafrm::distributed::test {

// A port nobody listens on right now (bind to port 0, read it back, close).
inline int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw std::runtime_error("free_port: socket() failed");
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    ::close(fd);
    throw std::runtime_error("free_port: bind/getsockname failed");
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

struct ProcResult {
  int exit_code = -1;  // -1: killed at the deadline
  std::string output;  // stdout + stderr
};

inline std::filesystem::path self_exe() { return std::filesystem::read_symlink("/proc/self/exe"); }

// Runs `args` (args[0] is the program) once per rank with RANK/WORLD_SIZE/LOCAL_RANK/
// MASTER_ADDR/MASTER_PORT set, output to files in `dir`. Every process still running at the
// deadline is killed (SIGKILL) and reported with exit code -1.
inline std::vector<ProcResult> run_ranks(const std::vector<std::string>& args, int world_size,
                                         int port, const std::filesystem::path& dir,
                                         std::chrono::seconds deadline,
                                         const std::vector<std::string>& extra_env = {}) {
  std::vector<pid_t> pids;
  std::vector<std::filesystem::path> logs;
  for (int r = 0; r < world_size; ++r) {
    std::vector<std::string> env;
    for (char** e = environ; *e; ++e) {
      const std::string s(*e);
      if (s.starts_with("RANK=") || s.starts_with("WORLD_SIZE=") || s.starts_with("LOCAL_RANK=") ||
          s.starts_with("MASTER_ADDR=") || s.starts_with("MASTER_PORT=") ||
          s.starts_with("TORCHELASTIC_"))
        continue;
      env.push_back(s);
    }
    env.push_back("RANK=" + std::to_string(r));
    env.push_back("LOCAL_RANK=" + std::to_string(r));
    env.push_back("WORLD_SIZE=" + std::to_string(world_size));
    env.push_back("MASTER_ADDR=127.0.0.1");
    env.push_back("MASTER_PORT=" + std::to_string(port));
    env.push_back("OMP_NUM_THREADS=1");
    for (const auto& e : extra_env) env.push_back(e);
    logs.push_back(dir / ("rank" + std::to_string(r) + ".log"));
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, logs.back().c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                     0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    std::vector<char*> argv, envp;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    for (auto& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
    pid_t pid = 0;
    const int rc = posix_spawn(&pid, args[0].c_str(), &fa, nullptr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) throw std::runtime_error("run_ranks: cannot start " + args[0]);
    pids.push_back(pid);
  }
  std::vector<ProcResult> res(static_cast<std::size_t>(world_size));
  std::vector<bool> done(static_cast<std::size_t>(world_size), false);
  const auto until = std::chrono::steady_clock::now() + deadline;
  int left = world_size;
  while (left > 0) {
    for (int r = 0; r < world_size; ++r) {
      if (done[static_cast<std::size_t>(r)]) continue;
      int status = 0;
      if (::waitpid(pids[static_cast<std::size_t>(r)], &status, WNOHANG) > 0) {
        done[static_cast<std::size_t>(r)] = true;
        --left;
        res[static_cast<std::size_t>(r)].exit_code =
            WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
    }
    if (left > 0 && std::chrono::steady_clock::now() > until) {
      for (int r = 0; r < world_size; ++r)
        if (!done[static_cast<std::size_t>(r)]) {
          ::kill(pids[static_cast<std::size_t>(r)], SIGKILL);
          ::waitpid(pids[static_cast<std::size_t>(r)], nullptr, 0);
          done[static_cast<std::size_t>(r)] = true;
        }
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (int r = 0; r < world_size; ++r) {
    std::ifstream in(logs[static_cast<std::size_t>(r)]);
    res[static_cast<std::size_t>(r)].output.assign(std::istreambuf_iterator<char>(in), {});
  }
  return res;
}

// A fresh directory for one scenario's rank logs: <tmp>/hafrm_<prefix>_<name>_<pid>.
inline std::filesystem::path scratch(const std::string& prefix, const std::string& name) {
  auto d = std::filesystem::temp_directory_path() /
           ("hafrm_" + prefix + "_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::create_directories(d);
  return d;
}

// Every rank's output, labelled, for the failure message.
inline std::string all_output(const std::vector<ProcResult>& r) {
  std::string s;
  for (std::size_t i = 0; i < r.size(); ++i)
    s += "--- rank " + std::to_string(i) + "\n" + r[i].output;
  return s;
}

}  // namespace hafrm::distributed::test

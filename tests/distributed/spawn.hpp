// spawn.hpp: the one scaffold of the multi-process tests. run_scenario() starts `world_size`
// copies of this test binary, each one rank of a scenario (`--child NAME`, child.cpp), with the
// variables torchrun would set, and waits for all of them under a hard deadline: a rank still
// running then is killed (SIGKILL) and reported as killed, so a hung rank fails its test instead
// of hanging CI. Each rank also dies with the test process (PR_SET_PDEATHSIG, main.cpp), and the
// ranks' logs live in a scratch directory that is removed once they are read.
//
//   const auto run = ht::run_scenario("collectives", world, {.deadline = 120s, .timeout = 30s});
//   INFO(run.report());
//   CHECK(run.exit_codes() == std::vector<int>(world, 0));
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

inline constexpr int kKilledAtDeadline = -1;

struct RankResult {
  int exit_code = kKilledAtDeadline;  // 128 + signal when a signal ended it
  std::string output;                 // stdout + stderr
};

struct ScenarioRun {
  std::vector<RankResult> ranks;
  double seconds = 0;  // wall time from the first start to the last exit (or the kill)

  std::vector<int> exit_codes() const {
    std::vector<int> c;
    for (const auto& r : ranks) c.push_back(r.exit_code);
    return c;
  }
  // Every rank's exit and output, labelled: the failure message of a test.
  std::string report() const {
    std::string s = "wall " + std::to_string(seconds) + " s\n";
    for (std::size_t i = 0; i < ranks.size(); ++i) {
      const int c = ranks[i].exit_code;
      s += "--- rank " + std::to_string(i) + ": " +
           (c == kKilledAtDeadline ? "killed at the deadline" : "exit " + std::to_string(c)) +
           "\n" + ranks[i].output;
    }
    return s;
  }
};

struct ScenarioOptions {
  // Hard bound on the whole run; ranks still running then are killed.
  std::chrono::seconds deadline{120};
  // The ranks' own c10d timeout (HAFRM_TEST_TIMEOUT_MS, child.cpp): well inside the deadline, so
  // a fault surfaces as the ranks' error, not as the kill.
  std::chrono::milliseconds timeout{30000};
};

namespace detail {

// Started processes; whatever is still running when this goes out of scope (an exception while
// starting the others) is killed and reaped.
struct Children {
  std::vector<pid_t> pids;
  std::vector<bool> reaped;
  Children() = default;
  Children(const Children&) = delete;
  Children& operator=(const Children&) = delete;
  ~Children() { kill_rest(); }
  void kill_rest() {
    for (std::size_t i = 0; i < pids.size(); ++i)
      if (!reaped[i]) {
        ::kill(pids[i], SIGKILL);
        ::waitpid(pids[i], nullptr, 0);
        reaped[i] = true;
      }
  }
};

// The environment of rank `rank`: this process's, minus any launch variables it has, plus the
// ones torchrun would set and `extra`.
inline std::vector<std::string> rank_env(int rank, int world_size, int port,
                                         const std::vector<std::string>& extra) {
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    const std::string s(*e);
    if (s.starts_with("RANK=") || s.starts_with("WORLD_SIZE=") || s.starts_with("LOCAL_RANK=") ||
        s.starts_with("MASTER_ADDR=") || s.starts_with("MASTER_PORT=") ||
        s.starts_with("TORCHELASTIC_"))
      continue;
    env.push_back(s);
  }
  for (auto s : {"RANK=" + std::to_string(rank), "LOCAL_RANK=" + std::to_string(rank),
                 "WORLD_SIZE=" + std::to_string(world_size), std::string("MASTER_ADDR=127.0.0.1"),
                 "MASTER_PORT=" + std::to_string(port), std::string("OMP_NUM_THREADS=1"),
                 "HAFRM_TEST_PARENT_PID=" + std::to_string(::getpid())})
    env.push_back(std::move(s));
  env.insert(env.end(), extra.begin(), extra.end());
  return env;
}

inline pid_t spawn(const std::vector<std::string>& args, std::vector<std::string> env,
                   const std::filesystem::path& log) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  std::vector<char*> argv, envp;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, args[0].c_str(), &fa, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) throw std::runtime_error("run_scenario: cannot start " + args[0]);
  return pid;
}

// Removes the scenario's log directory when the run is over, however it ends.
struct ScratchDir {
  std::filesystem::path path;
  explicit ScratchDir(const std::string& name) {
    static int serial = 0;
    path =
        std::filesystem::temp_directory_path() /
        ("hafrm_dist_" + name + "_" + std::to_string(::getpid()) + "_" + std::to_string(serial++));
    std::filesystem::create_directories(path);
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

}  // namespace detail

// Runs scenario `name` (child.cpp) as `world_size` ranks of this binary on a fresh loopback port.
inline ScenarioRun run_scenario(const std::string& name, int world_size,
                                const ScenarioOptions& opt = {}) {
  const detail::ScratchDir dir(name + std::to_string(world_size));
  const std::vector<std::string> args = {std::filesystem::read_symlink("/proc/self/exe").string(),
                                         "--child", name};
  const int port = free_port();
  const std::vector<std::string> extra = {"HAFRM_TEST_TIMEOUT_MS=" +
                                          std::to_string(opt.timeout.count())};
  const auto t0 = std::chrono::steady_clock::now();
  detail::Children kids;
  std::vector<std::filesystem::path> logs;
  for (int r = 0; r < world_size; ++r) {
    logs.push_back(dir.path / ("rank" + std::to_string(r) + ".log"));
    kids.pids.push_back(detail::spawn(args, detail::rank_env(r, world_size, port, extra), logs[r]));
    kids.reaped.push_back(false);
  }
  ScenarioRun run;
  run.ranks.resize(static_cast<std::size_t>(world_size));
  const auto until = t0 + opt.deadline;
  for (int left = world_size; left > 0;) {
    for (std::size_t r = 0; r < kids.pids.size(); ++r) {
      int status = 0;
      if (kids.reaped[r] || ::waitpid(kids.pids[r], &status, WNOHANG) <= 0) continue;
      kids.reaped[r] = true;
      --left;
      run.ranks[r].exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    if (left > 0 && std::chrono::steady_clock::now() > until) break;
    if (left > 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  kids.kill_rest();  // past the deadline: their exit code stays kKilledAtDeadline
  run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (std::size_t r = 0; r < logs.size(); ++r) {
    std::ifstream in(logs[r]);
    run.ranks[r].output.assign(std::istreambuf_iterator<char>(in), {});
  }
  return run;
}

}  // namespace hafrm::distributed::test

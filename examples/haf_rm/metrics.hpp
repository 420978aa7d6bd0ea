// metrics.hpp: the metrics file, one record per log interval and per evaluation, as JSON lines
// (default) or CSV (when the path ends in ".csv"). scripts/plot_compare.py reads either.
//
//   rm::MetricsLog log("run/metrics.jsonl", /*resume_step=*/-1);     // fresh: truncates
//   log.write({{"step", 100}, {"split", "train"}, {"loss", 0.41}});
// A resumed run passes the checkpoint's step: records after it (written by the interrupted run
// past its last checkpoint) are dropped, so the file reads like one uninterrupted run.
#pragma once

#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace hafrm::examples::rm {

class MetricsLog {
 public:
  // The CSV columns; a JSONL record may hold more (per-kind accuracies of other datasets).
  static const std::vector<std::string>& csv_columns() {
    static const std::vector<std::string> c = {"step",
                                               "split",
                                               "time_s",
                                               "loss",
                                               "reward_loss",
                                               "policy_loss",
                                               "reward_acc",
                                               "implicit_acc",
                                               "score_acc",
                                               "grad_norm",
                                               "lr",
                                               "w_reward",
                                               "alpha",
                                               "pairs",
                                               "reward_acc_swap",
                                               "reward_acc_substitute",
                                               "implicit_acc_swap",
                                               "implicit_acc_substitute",
                                               "gold_reward_acc",
                                               "gold_implicit_acc",
                                               "gold_score_acc"};
    return c;
  }

  MetricsLog() = default;
  MetricsLog(const std::filesystem::path& path, int64_t resume_step)
      : path_(path), csv_(path.extension() == ".csv") {
    if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path());
    std::vector<std::string> keep;
    if (resume_step >= 0 && std::filesystem::exists(path)) {
      std::ifstream in(path);
      std::string line;
      bool header = csv_;
      while (std::getline(in, line)) {
        if (header) {
          header = false;
          continue;
        }
        if (line.empty()) continue;
        if (record_step(line) <= resume_step) keep.push_back(line);
      }
    }
    out_.open(path, std::ios::trunc);
    if (!out_) throw std::runtime_error("cannot write metrics file " + path.string());
    if (csv_) write_csv_header();
    for (const auto& l : keep) out_ << l << '\n';
    out_.flush();
  }

  bool enabled() const { return out_.is_open(); }
  const std::filesystem::path& path() const { return path_; }

  void write(const nlohmann::ordered_json& record) {
    if (!out_.is_open()) return;
    if (!csv_) {
      out_ << record.dump() << '\n';
    } else {
      const auto& cols = csv_columns();
      for (std::size_t i = 0; i < cols.size(); ++i) {
        if (i) out_ << ',';
        const auto it = record.find(cols[i]);
        if (it == record.end() || it->is_null()) continue;
        out_ << (it->is_string() ? it->get<std::string>() : it->dump());
      }
      out_ << '\n';
    }
    out_.flush();  // a killed run keeps every record written so far
  }

 private:
  int64_t record_step(const std::string& line) const {
    try {
      if (csv_) return std::stoll(line.substr(0, line.find(',')));
      auto j = nlohmann::json::parse(line);
      return j.at("step").get<int64_t>();
    } catch (const std::exception&) {
      return std::numeric_limits<int64_t>::max();  // a torn last line is dropped too
    }
  }
  void write_csv_header() {
    const auto& cols = csv_columns();
    for (std::size_t i = 0; i < cols.size(); ++i) out_ << (i ? "," : "") << cols[i];
    out_ << '\n';
  }

  std::filesystem::path path_;
  bool csv_ = false;
  std::ofstream out_;
};

}  // namespace hafrm::examples::rm

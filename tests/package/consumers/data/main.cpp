// Outside consumer of hafrm::data (tests/package): loads TRL conversational preference rows with
// no "prompt" field (the file given), tokenizes them with the byte tokenizer, assembles each as a
// pair and its chosen response alone, and checks that the single sequence is the pair's chosen
// side; then parses one best-of-N score row. Prints "data OK" when every check holds.
#include <hafrm/data/assemble.hpp>
#include <hafrm/data/preference_records.hpp>
#include <hafrm/data/score_records.hpp>

#include <cstdio>
#include <exception>
#include <variant>

namespace hd = hafrm::data;

int main(int argc, char** argv) try {
  if (argc != 2) {
    std::fprintf(stderr, "usage: consumer PREFERENCES.jsonl\n");
    return 2;
  }
  const hd::LoadedRecords loaded = hd::load_preference_records(argv[1]);
  const hd::ByteTokenizer tok;
  hd::AssemblyOptions options;  // Phi template
  options.max_length = 96;      // short enough that the third row's chosen response is cut
  options.max_prompt_length = 48;
  int cut = 0;
  for (const hd::PreferenceRecord& record : loaded.records) {
    const auto& r = std::get<hd::TextRecord>(record);
    const hd::TokenizedPair pair = hd::assemble_pair(tok, r, options);
    const hd::TokenizedSequence single = hd::assemble_single(tok, r.prompt, r.chosen, options);
    if (single.ids != pair.chosen_ids || single.labels != pair.chosen_labels ||
        single.prompt_length != pair.prompt_length || single.ids.back() != tok.eos_id()) {
      std::fprintf(stderr, "line %zu: assemble_single differs from the pair's chosen side\n",
                   r.line);
      return 1;
    }
    cut += single.response_truncated;
  }
  const auto& second = std::get<hd::TextRecord>(loaded.records.at(1));
  const hd::ScoreRecord row = hd::parse_score_record(
      R"({"prompt":[{"role":"user","content":"q"}],"responses":["a",[{"role":"assistant","content":"b"}]]})",
      "inline", 1);
  if (loaded.records.size() != 3 ||
      second.prompt != "system: Answer in one word.\nuser: Colour of the sky?" ||
      second.chosen != "Blue." || cut != 1 || !row.group || row.prompt != "q" ||
      row.responses.size() != 2 || row.responses[1] != "b") {
    std::fprintf(stderr, "unexpected records: %zu rows, %d responses cut\n", loaded.records.size(),
                 cut);
    return 1;
  }
  std::printf("data OK (%zu pairs, %d chosen response cut)\n", loaded.records.size(), cut);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "consumer failed: %s\n", e.what());
  return 1;
}

// Chat message lists (TRL's conversational format): how a list becomes prompt text, and how a
// response given as a list becomes response text.
//
// A message is {"role": "system" | "user" | "assistant", "content": str}; other keys are ignored,
// any other role is an error. Rules, shared by the preference and the score records:
//   prompt    render_messages(msgs): a single "user" message gives its content as is; any other
//             list gives one line per message, `role + ": " + content`, joined with "\n".
//   response  the LAST message, whose role must be "assistant"; its content is the response
//             (earlier messages in the list are checked, then not used).
//
// #include <hafrm/data/messages.hpp>
// example-begin render_messages
//   namespace hd = hafrm::data;
//   const std::vector<hd::Message> chat = {{"system", "Be brief."}, {"user", "2+2?"}};
//   std::string prompt = hd::render_messages(chat);  // "system: Be brief.\nuser: 2+2?"
//   const std::vector<hd::Message> one = {{"user", "2+2?"}};
//   std::string single = hd::render_messages(one);   // "2+2?"
// example-end
#pragma once

#include <array>
#include <cstddef>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "hafrm/data/jsonl.hpp"

namespace hafrm::data {

/// One chat message.
struct Message {
  std::string role;
  std::string content;
  bool operator==(const Message&) const = default;
};

/// The roles a message may have.
inline constexpr std::array<std::string_view, 3> kMessageRoles = {"system", "user", "assistant"};

inline bool is_message_role(std::string_view role) {
  for (const auto r : kMessageRoles) {
    if (r == role) return true;
  }
  return false;
}

/// The prompt text of a message list: the content of a single "user" message; otherwise
/// `role + ": " + content` per message, joined with "\n". Throws std::invalid_argument for an
/// empty list or a role other than system, user, assistant (naming the message's index).
inline std::string render_messages(std::span<const Message> messages) {
  if (messages.empty()) {
    throw std::invalid_argument(
        "hafrm::data::render_messages: argument 'messages' expected at least one message");
  }
  for (std::size_t i = 0; i < messages.size(); ++i) {
    if (!is_message_role(messages[i].role)) {
      throw std::invalid_argument(
          "hafrm::data::render_messages: argument 'messages' expected "
          "role system, user or assistant, got \"" +
          messages[i].role + "\" at index " + std::to_string(i));
    }
  }
  if (messages.size() == 1 && messages[0].role == "user") return messages[0].content;
  std::string out;
  for (std::size_t i = 0; i < messages.size(); ++i) {
    if (i > 0) out += '\n';
    out += messages[i].role;
    out += ": ";
    out += messages[i].content;
  }
  return out;
}

namespace detail {

inline std::string element_field(const std::string& field, std::size_t i) {
  return field + "[" + std::to_string(i) + "]";
}

/// A JSON message list (the value of `field`), every message checked: an error names the
/// element ("chosen[1]") or its key ("chosen[1].role", "chosen[1].content").
template <class Json>
std::vector<Message> get_messages(const Json& list, const std::string& field, const Fail& fail) {
  if (!list.is_array()) {
    fail(field, std::string("expected a message list, got ") + list.type_name());
  }
  if (list.empty()) fail(field, "empty message list");
  std::vector<Message> messages;
  messages.reserve(list.size());
  for (std::size_t i = 0; i < list.size(); ++i) {
    const Json& m = list[i];
    const std::string at = element_field(field, i);
    if (!m.is_object()) {
      fail(at, std::string("expected a message object with \"role\" and \"content\", got ") +
                   m.type_name());
    }
    const auto text_of = [&](const char* key) {
      const auto it = m.find(key);
      if (it == m.end()) fail(at + "." + key, "missing field");
      if (!it->is_string()) {
        fail(at + "." + key, std::string("expected a string, got ") + it->type_name());
      }
      return it->template get<std::string>();
    };
    Message msg{text_of("role"), text_of("content")};
    if (!is_message_role(msg.role)) {
      fail(at + ".role", "role " + short_dump(m.at("role")) +
                             " is not one of \"system\", \"user\", \"assistant\"");
    }
    messages.push_back(std::move(msg));
  }
  return messages;
}

/// The response text of a checked message list: the last message's content; it must have role
/// "assistant" and not be empty.
inline std::string response_of(const std::vector<Message>& messages, const std::string& field,
                               const Fail& fail) {
  const std::string last = element_field(field, messages.size() - 1);
  if (messages.back().role != "assistant") {
    fail(last + ".role", "the last message is the response: expected role \"assistant\", got \"" +
                             messages.back().role + "\"");
  }
  if (messages.back().content.empty()) fail(last + ".content", "empty response");
  return messages.back().content;
}

/// A response given as a string or as a message list (value of `field`); never empty.
template <class Json>
std::string get_response_value(const Json& v, const std::string& field, const Fail& fail) {
  if (v.is_string()) {
    std::string text = v.template get<std::string>();
    if (text.empty()) fail(field, "empty response");
    return text;
  }
  if (!v.is_array()) {
    fail(field, std::string("expected a string or a message list, got ") + v.type_name());
  }
  return response_of(get_messages(v, field, fail), field, fail);
}

/// A prompt given as a string (as is, may be empty) or as a message list (render_messages).
template <class Json>
std::string get_prompt_value(const Json& v, const std::string& field, const Fail& fail) {
  if (v.is_string()) return v.template get<std::string>();
  if (!v.is_array()) {
    fail(field, std::string("expected a string or a message list, got ") + v.type_name());
  }
  return render_messages(get_messages(v, field, fail));
}

}  // namespace detail

}  // namespace hafrm::data

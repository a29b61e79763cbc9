// http_server/options.cpp — command-line parsing for the example.
#include "options.hpp"

#include <algorithm>
#include <charconv>
#include <fstream>
#include <limits>
#include <sstream>
#include <stdexcept>

namespace {

[[noreturn]] void bad(const std::string& what) { throw std::invalid_argument(what); }

std::size_t number(std::string_view name, std::string_view text,
                   std::size_t max = std::numeric_limits<std::size_t>::max()) {
  std::size_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value > max) {
    bad(std::string(name) + ": '" + std::string(text) + "' is not a number up to " +
        std::to_string(max));
  }
  return value;
}

std::size_t positive(std::string_view name, std::string_view text) {
  const std::size_t value = number(name, text);
  if (value == 0) {
    bad(std::string(name) + " must be at least 1");
  }
  return value;
}

void add_tier(server_options& server, std::string_view name, std::string_view tenant,
              std::string_view limit) {
  if (!valid_tenant(tenant)) {
    bad(std::string(name) + ": '" + std::string(tenant) +
        "' is not a tenant name (1 to 64 of [A-Za-z0-9._-])");
  }
  server.tiers[std::string(tenant)] = positive(name, limit);  // the last one wins
}

// --tier acme=16
void parse_tier(server_options& server, std::string_view value) {
  const auto eq = value.find('=');
  if (eq == std::string_view::npos) {
    bad("--tier: expected TENANT=LIMIT, got '" + std::string(value) + "'");
  }
  add_tier(server, "--tier", value.substr(0, eq), value.substr(eq + 1));
}

// --tiers FILE: "tenant limit" per line, blank lines and # comments ignored.
void parse_tiers_file(server_options& server, const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    bad("--tiers: cannot read " + path);
  }
  std::string line;
  for (int line_number = 1; std::getline(in, line); ++line_number) {
    line = line.substr(0, line.find('#'));
    std::istringstream fields(line);
    std::string tenant, limit, extra;
    if (!(fields >> tenant)) {
      continue;  // blank or comment
    }
    const std::string where = path + ":" + std::to_string(line_number);
    if (!(fields >> limit) || (fields >> extra)) {
      bad(where + ": expected 'tenant limit'");
    }
    add_tier(server, where, tenant, limit);
  }
}

// --port 8080 or, for load, --port 8080,8081,8082
std::vector<unsigned short> parse_ports(std::string_view value) {
  std::vector<unsigned short> ports;
  for (std::size_t from = 0;;) {
    const std::size_t comma = std::min(value.find(',', from), value.size());
    ports.push_back(static_cast<unsigned short>(number("--port", value.substr(from, comma - from), 65535)));
    if (comma == value.size()) {
      return ports;
    }
    from = comma + 1;
  }
}

// --redis 127.0.0.1:6379
void parse_redis(fleet_config& fleet, std::string_view value) {
  const auto colon = value.rfind(':');
  if (colon == std::string_view::npos || colon == 0) {
    bad("--redis: expected HOST:PORT, got '" + std::string(value) + "'");
  }
  fleet.host = std::string(value.substr(0, colon));
  fleet.port = static_cast<std::uint16_t>(number("--redis port", value.substr(colon + 1), 65535));
}

}  // namespace

bool valid_tenant(std::string_view tenant) {
  return !tenant.empty() && tenant.size() <= 64 &&
         std::all_of(tenant.begin(), tenant.end(), [](char c) {
           return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
         });
}

const char* usage() {
  return "usage:\n"
         "  keysem_example_http_server [--seconds S] [server options]\n"
         "  keysem_example_http_server serve [server options] [--port-file F]\n"
         "  keysem_example_http_server load --port P[,P...] [--seconds S]\n"
         "server options: --port P, --limit N, --tier TENANT=N (repeatable), --tiers FILE,\n"
         "                --max-waiting N, --total N, --timeout-ms N, --threads N,\n"
         "                --redis HOST:PORT, --lease-ms T\n";
}

command_line parse_command_line(int argc, char** argv) {
  command_line cmd;
  int i = 1;
  if (i < argc && !std::string_view(argv[i]).starts_with("--")) {
    cmd.mode = argv[i++];
    if (cmd.mode != "serve" && cmd.mode != "load") {
      bad("unknown mode '" + cmd.mode + "' (serve or load, or none for both)");
    }
  }
  for (; i < argc; i += 2) {
    const std::string_view name = argv[i];
    if (i + 1 == argc) {
      bad(std::string(name) + " needs a value");
    }
    const std::string value = argv[i + 1];
    if (name == "--port") {
      cmd.ports = parse_ports(value);
      cmd.server.port = cmd.ports.front();
    } else if (name == "--port-file") {
      cmd.port_file = value;
    } else if (name == "--limit") {
      cmd.server.limit = positive(name, value);
    } else if (name == "--tier") {
      parse_tier(cmd.server, value);
    } else if (name == "--tiers") {
      parse_tiers_file(cmd.server, value);
    } else if (name == "--max-waiting") {
      cmd.server.max_waiting = number(name, value);
    } else if (name == "--total") {
      cmd.server.total = positive(name, value);
    } else if (name == "--timeout-ms") {
      cmd.server.acquire_timeout = std::chrono::milliseconds(number(name, value, 3'600'000));
    } else if (name == "--threads") {
      cmd.server.threads = positive(name, value);
    } else if (name == "--redis") {
      parse_redis(cmd.server.fleet, value);
    } else if (name == "--lease-ms") {
      cmd.server.fleet.lease = std::chrono::milliseconds(positive(name, value));
    } else if (name == "--seconds") {
      double seconds = 0;
      const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), seconds);
      if (ec != std::errc() || end != value.data() + value.size() || !(seconds > 0) ||
          seconds > 3600) {
        bad("--seconds: '" + value + "' is not a duration in (0, 3600]");
      }
      cmd.duration = std::chrono::milliseconds(static_cast<long>(seconds * 1000));
    } else {
      bad("unknown option '" + std::string(name) + "'");
    }
  }
  if (cmd.mode == "load" &&
      (cmd.ports.empty() || std::count(cmd.ports.begin(), cmd.ports.end(), 0) != 0)) {
    bad("load needs --port (one or more, comma-separated)");
  }
  if (cmd.mode != "load" && cmd.ports.size() > 1) {
    bad("--port: only load takes several ports");
  }
  return cmd;
}

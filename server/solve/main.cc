// layerfl-solve FILE.json (or - for stdin): the strategic selection solver on
// its own (see server/solve/solve_json.h for the format). Prints the answer
// as one JSON line; exit 0 solved, 2 bad input.
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>
#include <string>

#include "server/solve/solve_json.h"

int main(int argc, char** argv) {
  const std::string usage =
      "usage: layerfl-solve FILE.json | -   (format: README, 'layerfl-solve')";
  if (argc != 2 || std::string(argv[1]) == "--help") {
    std::cerr << usage << "\n";
    return argc == 2 ? 0 : 2;
  }
  const std::string path = argv[1];
  std::string text;
  if (path == "-") {
    text.assign(std::istreambuf_iterator<char>(std::cin),
                std::istreambuf_iterator<char>());
  } else {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      std::cerr << "layerfl-solve: cannot read " << path << "\n";
      return 2;
    }
    std::ostringstream buf;
    buf << in.rdbuf();
    text = buf.str();
  }
  absl::StatusOr<std::string> out = layerfl::SolveStrategicJson(text);
  if (!out.ok()) {
    std::cerr << "layerfl-solve: " << out.status().message() << "\n";
    return 2;
  }
  std::cout << *out;
  return 0;
}

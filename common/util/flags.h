#ifndef LAYERFL_COMMON_UTIL_FLAGS_H_
#define LAYERFL_COMMON_UTIL_FLAGS_H_

// Command-line parsing for LayerFL's binaries: `--help` lists the flags
// defined in the binary's own main.cc (Abseil's default only lists flags of a
// file named after the program), then parses argv.

#include <string>
#include <vector>

namespace layerfl {

// Sets the usage line, makes --help show the flags of files ending in
// "main.cc", parses the command line and returns the positional arguments.
// Also switches Abseil's mutex deadlock detection off: a debugging aid that
// Debian's Abseil (built without NDEBUG) leaves on, which records every
// lock held while taking another — 5% of an asynchronous coordinator's CPU
// with 10,000 clients. The tests (which do not call this) keep it.
std::vector<char*> ParseFlags(int argc, char** argv, const std::string& usage);

}  // namespace layerfl

#endif  // LAYERFL_COMMON_UTIL_FLAGS_H_

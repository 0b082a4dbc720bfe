// subleasectl: wiring only (ctl/ctl.h).
#include <cstdio>
#include <string>

#include "ctl/ctl.h"

int main(int argc, char** argv) {
  std::string out, err;
  int rc = sublease::ctl::RunCtl(argc, argv, &out, &err);
  std::fputs(out.c_str(), stdout);
  std::fputs(err.c_str(), stderr);
  return rc;
}

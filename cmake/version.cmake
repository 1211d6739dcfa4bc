# Writes jarvis_version.h with the project version and the git revision of the source tree,
# run at every build (the header changes, and cli_args.cc recompiles, only when they do).
# -DSOURCE_DIR=... -DOUT=... -DVERSION=...
execute_process(COMMAND git -C "${SOURCE_DIR}" describe --always --dirty --abbrev=10
                OUTPUT_VARIABLE rev OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE rc)
if(NOT rc EQUAL 0 OR rev STREQUAL "")
  set(rev "unknown")
endif()
set(text "#pragma once\n#define JARVIS_VERSION \"${VERSION}\"\n#define JARVIS_GIT_REVISION \"${rev}\"\n")
if(EXISTS "${OUT}")
  file(READ "${OUT}" old)
endif()
if(NOT "${old}" STREQUAL "${text}")
  file(WRITE "${OUT}" "${text}")
endif()

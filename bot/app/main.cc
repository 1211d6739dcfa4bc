#include "bot/app/cli.h"

int main(int argc, char** argv) { return jarvis::cli_main(argc, argv); }

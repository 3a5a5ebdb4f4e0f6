/* The command table. Each command lives in tools/cmd_NAME.c. */
#include "cli.h"

extern const kd_command kd_cmd_bench;
extern const kd_command kd_cmd_devices;

const kd_command *const kd_commands[] = {
    &kd_cmd_bench,
    &kd_cmd_devices,
};
const int kd_command_count = (int)(sizeof kd_commands / sizeof kd_commands[0]);

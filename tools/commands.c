/* The command table. Each command lives in tools/cmd_NAME.c. */
#include "cli.h"

extern const kd_command kd_cmd_devices;
extern const kd_command kd_cmd_phantom;
extern const kd_command kd_cmd_inspect;

const kd_command *const kd_commands[] = {
    &kd_cmd_devices,
    &kd_cmd_phantom,
    &kd_cmd_inspect,
};
const int kd_command_count = (int)(sizeof kd_commands / sizeof kd_commands[0]);

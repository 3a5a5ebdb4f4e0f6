/* The command table. Each command lives in tools/cmd_NAME.c. */
#include "cli.h"

extern const kd_command kd_cmd_devices, kd_cmd_models, kd_cmd_phantom, kd_cmd_inspect,
    kd_cmd_train, kd_cmd_selftest, kd_cmd_import_torch, kd_cmd_segment, kd_cmd_evaluate,
    kd_cmd_annotate, kd_cmd_distill, kd_cmd_demo, kd_cmd_bench, kd_cmd_tune, kd_cmd_convert;

const kd_command *const kd_commands[] = {
    &kd_cmd_devices,  &kd_cmd_models,   &kd_cmd_phantom,      &kd_cmd_inspect,  &kd_cmd_convert,
    &kd_cmd_train,    &kd_cmd_selftest, &kd_cmd_import_torch, &kd_cmd_segment,
    &kd_cmd_evaluate, &kd_cmd_annotate, &kd_cmd_distill, &kd_cmd_demo,
    &kd_cmd_bench,    &kd_cmd_tune,
};
const int kd_command_count = (int)(sizeof kd_commands / sizeof kd_commands[0]);

/* Fault injection for tests (KDSEG_FAULT): a chosen kernel launch, device read or write
 * fails with a chosen OpenCL error, as a failing driver would. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rt_internal.h"

/* KDSEG_FAULT=KIND:N[:CODE] (tests): the N-th launch, blocking or non-blocking read,
 * or write of the device fails with CODE (an OpenCL error name or number; default
 * CL_OUT_OF_RESOURCES), as a driver would report it, so error paths can be tested
 * without a failing device. Read once here; a bad value is refused. KDSEG_FAULT=full:N
 * is the file writers' (kd_output_target, src/core/fs.c): accepted here and left to them. */
kd_status kd_rt_fault_parse(kd_device *d) {
    const char *e = getenv("KDSEG_FAULT");
    if (!e || !*e) return KD_OK;
    static const char *const kinds[] = {"launch", "read", "write"};
    char kind[16] = "", code[64] = "";
    long n = 0;
    int got = sscanf(e, "%15[a-z]:%ld:%63s", kind, &n, code);
    if (got == 2 && n > 0 && !strcmp(kind, "full")) return KD_OK; /* files, not the device */
    for (int k = 0; k < 3 && got >= 2 && n > 0; k++)
        if (!strcmp(kind, kinds[k])) d->fault_kind = KD_FAULT_LAUNCH + k;
    d->fault_at = n;
    d->fault_code = CL_OUT_OF_RESOURCES;
    if (d->fault_kind && got == 3) {
        char *end;
        long v = strtol(code, &end, 10);
        int found = *end == 0 && v < 0;
        if (found) d->fault_code = (cl_int)v;
        for (cl_int c = -1; c >= -70 && !found; c--)
            if (!strcmp(code, kd_cl_error_name(c))) d->fault_code = c, found = 1;
        if (!found) d->fault_kind = KD_FAULT_NONE;
    }
    if (!d->fault_kind)
        return kd_fail(KD_ERR_INVALID_ARG,
                       "KDSEG_FAULT='%s': expected launch|read|write:N[:CODE] with N >= 1 and "
                       "CODE an OpenCL error name such as CL_OUT_OF_RESOURCES, or full:N", e);
    kd_log(KD_LOG_WARN, "KDSEG_FAULT: %s call %ld will fail with %s", kinds[d->fault_kind - 1],
           d->fault_at, kd_cl_error_name(d->fault_code));
    return KD_OK;
}

cl_int kd_rt_fault(kd_device *d, int kind) {
    if (d->fault_kind != kind) return CL_SUCCESS;
    return atomic_fetch_add(&d->fault_count, 1) + 1 == d->fault_at ? d->fault_code : CL_SUCCESS;
}


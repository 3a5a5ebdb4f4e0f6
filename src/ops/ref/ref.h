/* Plain C references of every op: the spec the OpenCL kernels are tested
 * against. Host float arrays in the stored layouts: activations (N, D, H, W, C),
 * conv weights (kD, kH, kW, Cin/groups, Cout). Same output/accumulate rules as
 * ops.h. Written for clarity, not speed. */
#ifndef KD_REF_H
#define KD_REF_H

#include "../ops.h"
#include "ref_conv.h"
#include "ref_layers.h"
#include "ref_train.h"
#include "ref_window.h"

#endif

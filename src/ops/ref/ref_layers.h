/* C references of normalisation, activations, resampling, gating, elementwise (see ref.h). */
#ifndef KD_REF_LAYERS_H
#define KD_REF_LAYERS_H

#include "../ops.h"

#endif

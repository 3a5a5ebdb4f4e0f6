/* C references of the convolutions (see ref.h). */
#ifndef KD_REF_CONV_H
#define KD_REF_CONV_H

#include "../ops.h"

#endif
